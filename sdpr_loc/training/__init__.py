"""Training the keypoint network through the certified localization pipeline.

``Trainer`` (loop, checkpoints, exact resume, DDP via torchrun), ``losses`` (pose and keypoint
losses), ``checkpoint`` (safe, atomic checkpoints; ``load_network``), ``config`` (the
config/train.yaml parameters), ``metrics`` (pose errors, CSV/TensorBoard log).
"""
from .checkpoint import CheckpointError, load_localizer_config, load_network, save_network
from .config import Params, load_params
from .losses import LossWeights, keypoint_loss, pose_loss, total_loss

__all__ = ["Trainer", "CheckpointError", "load_network", "load_localizer_config", "save_network", "Params", "load_params",
           "LossWeights", "keypoint_loss", "pose_loss", "total_loss"]


def __getattr__(name):  # the trainer pulls in DataLoader/tqdm/tensorboard: import it on demand
    if name == "Trainer":
        from .trainer import Trainer
        return Trainer
    raise AttributeError(name)
