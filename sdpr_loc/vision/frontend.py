"""Keypoint front ends by name: ``orb`` (classical, :mod:`sdpr_loc.vision.classical`) or ``network``.

An extractor is ``extract(left, right, camera) -> StereoKeypoints`` (B = 1) on (H, W) float gray
images in [0, 1]. The network front end imports torch models lazily and loads the checkpoint
with ``sdpr_loc.vision.weights.load_network`` (weights only: a checkpoint cannot run code).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from sdpr_loc.errors import UsageError, UserError
from sdpr_loc.vision.keypoints import StereoKeypoints

__all__ = ["make_extractor", "make_frames", "load_model", "resolve_device", "default_model_path", "FRONTENDS",
           "MATCHINGS", "ModelError"]

FRONTENDS = ("orb", "network")
MATCHINGS = ("dense", "keypoints")
Extractor = Callable[..., StereoKeypoints]


class ModelError(UserError, ValueError):
    """A keypoint model that cannot be used (missing, unreadable, not ours); names the file."""


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when available else 'cpu'; 'cuda' without CUDA is an error."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("device 'cuda' requested but torch sees no CUDA device (use 'auto' or 'cpu')")
    if device not in ("cpu", "cuda"):
        raise UsageError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    return device


def default_model_path() -> Path:
    """The packaged model: the first ``*.pt`` in share/sdpr_loc/models (or the checkout's models/)."""
    from sdpr_loc.resources import share_path

    models = sorted(share_path("models").glob("*.pt")) if share_path("models").is_dir() else []
    if not models:
        raise ModelError(f"no packaged model in {share_path('models')}; set model_path or use frontend 'orb'")
    return models[0]


def make_extractor(frontend: str = "orb", model_path: str = "", device: str = "auto",
                   max_keypoints: int = 500, max_disparity: int = 80, sigma_px: float = 0.5,
                   min_ncc: float = 0.8) -> tuple[Extractor, str]:
    """(extractor, description) for the named front end; ValueError when it cannot be built."""
    if frontend == "orb":
        from sdpr_loc.vision.classical import orb_keypoints

        def extract(left, right, camera) -> StereoKeypoints:
            return orb_keypoints(left, right, camera, n_features=max_keypoints,
                                 max_disparity=max_disparity, sigma_px=sigma_px, min_ncc=min_ncc)

        return extract, f"orb ({max_keypoints} features)"
    if frontend != "network":
        raise UsageError(f"frontend must be one of {FRONTENDS}, got {frontend!r}")
    network, cfg, what = load_model(model_path, device, max_disparity, sigma_px)
    return _network_extractor(network, cfg), what


def _network_extractor(network, cfg) -> Extractor:
    import torch

    from sdpr_loc.vision.pipeline import extract_keypoints

    def extract(left, right, camera) -> StereoKeypoints:
        with torch.inference_mode():
            return extract_keypoints(network, left, right, camera, cfg).detach().to("cpu")

    return extract


def make_frames(frontend: str = "network", matching: str = "dense", model_path: str = "",
                device: str = "auto", max_keypoints: int = 500, max_disparity: int = 80,
                sigma_px: float = 0.5, min_ncc: float = 0.8):
    """(make_frame, matching config, description): ``make_frame(left, right, camera)`` is the live
    frame the :class:`~sdpr_loc.vision.tracker.Tracker` localizes.

    ``network`` + ``dense``: a :class:`~sdpr_loc.vision.dense.DenseFrame` (keyframe keypoints
    searched in the live dense descriptors, as trained); ``keypoints``: the front end's own
    keypoints in a :class:`~sdpr_loc.vision.frames.KeypointFrame` (ORB always matches this way).
    The matching config is the model's (ratio test, RANSAC gate), LocalizerConfig() for ORB.
    """
    from sdpr_loc.vision.frames import KeypointFrame
    from sdpr_loc.vision.pipeline import LocalizerConfig

    if matching not in MATCHINGS:
        raise UsageError(f"matching must be one of {MATCHINGS}, got {matching!r}")
    if frontend == "network" and matching == "dense":
        from sdpr_loc.vision.dense import DenseFrame

        network, cfg, what = load_model(model_path, device, max_disparity, sigma_px)
        return (lambda left, right, camera: DenseFrame(network, left, right, camera, cfg)), cfg, what + ", dense matching"
    if frontend == "orb" and matching == "dense":
        raise UsageError("ORB has no dense descriptors: use matching 'keypoints' with frontend 'orb'")
    if frontend == "network":  # one read of the checkpoint: network and the matching it was trained with
        network, trained, what = _load_trained(model_path, device)
        extract = _network_extractor(network, _inference_config(trained, max_disparity, sigma_px))
        cfg = trained or LocalizerConfig()
    else:
        extract, what = make_extractor(frontend, model_path, device, max_keypoints, max_disparity, sigma_px, min_ncc)
        cfg = LocalizerConfig()
    return (lambda left, right, camera: KeypointFrame(extract(left, right, camera), cfg)), cfg, what


def load_model(model_path: str = "", device: str = "auto", max_disparity: int = 80, sigma_px: float = 0.5):
    """(network in eval mode, LocalizerConfig it was trained with, description) of a checkpoint
    (default: the packaged model); ModelError naming the path when it cannot be loaded."""
    network, trained, what = _load_trained(model_path, device)
    return network, _inference_config(trained, max_disparity, sigma_px), what


def _load_trained(model_path: str, device: str):
    """(network in eval mode, its trained LocalizerConfig or None, description): one read of the file."""
    try:
        from sdpr_loc.vision.weights import load_for_inference
    except ImportError as err:
        raise ValueError(f"the network front end is unavailable in this install: {err}") from err
    dev = resolve_device(device)
    path = Path(model_path) if model_path else default_model_path()
    if not path.is_file():
        raise ModelError(f"model file {str(path)!r} does not exist")
    try:  # weights_only loading: a checkpoint cannot run code
        network, trained = load_for_inference(str(path), dev)
    except (OSError, ValueError, TypeError, KeyError) as err:  # the file's content does not fit: its path
        raise ModelError(f"cannot load model {str(path)!r}: {type(err).__name__}: {err}") from err
    network.eval()
    return network, trained, f"network {path.name} on {dev}"


def _inference_config(trained, max_disparity: int, sigma_px: float):
    """The matching settings the model was trained with; the caller's stereo range and pixel noise."""
    import dataclasses

    from sdpr_loc.vision.pipeline import LocalizerConfig

    return dataclasses.replace(trained or LocalizerConfig(), max_disparity=int(max_disparity), sigma_px=float(sigma_px))
