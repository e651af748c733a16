"""Training configuration: ``config/train.yaml`` (ROS parameter file) -> three small dataclasses.

The YAML is the single source of defaults for the CLI and the trainer node; the dataclass
defaults mirror it for library users (a test keeps the two equal). Parameters are flat, plain
ints / floats / strings / bools, as ROS parameters must be.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

from sdpr_loc.resources import share_path
from typing import Any, Mapping

import yaml

from sdpr_loc.errors import UsageError
from sdpr_loc.vision.network import NetworkConfig
from sdpr_loc.vision.pipeline import POSE_BLOCKS, LocalizerConfig

__all__ = ["TrainConfig", "DataConfig", "Params", "default_config_path", "load_params", "parse_override"]

NODE = "trainer_node"
KEYPOINTS_FROM = ("keyframe", "live")
FREEZE_GROUPS = {"encoder": "enc.", "decoder": "dec.", "detector": "detector.", "score": "score.",
                 "projection": "project."}


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, losses, checkpoints and logging (see config/train.yaml for each key)."""

    pose_block: str = "certified"
    epochs: int = 10
    batch_size: int = 4
    lr: float = 1e-3
    lr_min: float = 1e-5
    warmup_steps: int = 50
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    pose_weight: float = 1.0
    keypoint_weight: float = 0.05
    descriptor_weight: float = 1.0
    keypoints_from: str = "keyframe"
    trans_weight: float = 1.0
    rot_weight: float = 10.0
    huber_delta: float = 2.0
    uncertified: str = "skip"
    augment: bool = True
    seed: int = 0
    checkpoint_every: int = 100
    eval_every: int = 1
    eval_max_pairs: int = 200
    num_workers: int = 0
    progress: bool = True
    tensorboard: bool = True
    freeze: str = ""
    init_from: str = ""

    def __post_init__(self):
        if self.pose_block not in POSE_BLOCKS:
            raise ValueError(f"pose_block must be one of {POSE_BLOCKS}, got {self.pose_block!r}")
        if self.keypoints_from not in KEYPOINTS_FROM:
            raise ValueError(f"keypoints_from must be one of {KEYPOINTS_FROM}, got {self.keypoints_from!r}")
        if self.uncertified not in ("skip", "keypoint_only"):
            raise ValueError(f"uncertified must be 'skip' or 'keypoint_only', got {self.uncertified!r}")
        for name in ("epochs", "batch_size", "checkpoint_every", "eval_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if not self.lr > 0 or self.lr_min < 0:
            raise ValueError("lr must be positive and lr_min >= 0")
        self.freeze_prefixes()  # validates

    def freeze_prefixes(self) -> tuple[str, ...]:
        """Parameter-name prefixes of the frozen groups."""
        names = [s.strip() for s in self.freeze.split(",") if s.strip()]
        bad = [n for n in names if n not in FREEZE_GROUPS]
        if bad:
            raise ValueError(f"freeze: unknown group(s) {bad}; choose from {sorted(FREEZE_GROUPS)}")
        return tuple(FREEZE_GROUPS[n] for n in names)


@dataclass(frozen=True)
class DataConfig:
    """How pairs are made from bags (PairDataset arguments) and the validation split."""

    max_dist: float = 2.0
    max_angle_deg: float = 20.0
    keyframe_spacing: float = 0.0
    val_fraction: float = 0.1

    def __post_init__(self):
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")


@dataclass(frozen=True)
class Params:
    """All four groups, built from one flat parameter dict."""

    network: NetworkConfig
    localizer: LocalizerConfig
    train: TrainConfig
    data: DataConfig

    GROUPS = (NetworkConfig, LocalizerConfig, TrainConfig, DataConfig)

    @classmethod
    def from_flat(cls, params: Mapping[str, Any]) -> "Params":
        """Split a flat dict by field name; unknown keys and wrong types raise ValueError."""
        known = {f.name: (g, f) for g in cls.GROUPS for f in fields(g)}
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise ValueError(f"unknown training parameter(s) {unknown}; known: {sorted(known)}")
        parts: dict[type, dict] = {g: {} for g in cls.GROUPS}
        for k, v in params.items():
            g, f = known[k]
            parts[g][k] = _coerce(k, v, type(getattr(g(), k)))
        return cls(*(g(**parts[g]) for g in cls.GROUPS))

    def to_flat(self) -> dict:
        out: dict = {}
        for part in (self.network, self.localizer, self.train, self.data):
            out.update(asdict(part))
        return out


def _coerce(name: str, value: Any, kind: type) -> Any:
    """Check a YAML/CLI value against the default's type (ints are accepted for floats)."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif kind is str:
        if isinstance(value, str):
            return value
        if value is None:
            return ""
    raise ValueError(f"parameter {name!r} must be of type {kind.__name__}, got {value!r}")


def default_config_path() -> Path:
    """config/train.yaml of the source tree, or the installed share/sdpr_loc/config copy."""
    path = share_path("config", "train.yaml")
    if not path.is_file():
        raise FileNotFoundError(f"config/train.yaml not found (looked for {path})")
    return path


def load_params(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> Params:
    """Read ``trainer_node: ros__parameters`` from a YAML file (default: the packaged one).

    A file may set a subset of the keys: the rest come from the packaged defaults. Any value that
    does not fit is a UsageError naming where the parameters came from.
    """
    base = _read(default_config_path())
    if path is not None:
        base.update(_read(Path(path)))
    base.update(overrides or {})
    try:
        return Params.from_flat(base)
    except ValueError as err:  # validation of the user's values (unknown key, wrong type, out of range)
        source = f"config {str(path)!r}" if path is not None else "the packaged config"
        raise UsageError(f"training parameters ({source} and overrides): {err}") from err


def _read(path: Path) -> dict:
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise UsageError(f"cannot read training config {str(path)!r}: {e}") from None
    try:
        params = doc[NODE]["ros__parameters"]
    except (TypeError, KeyError):
        raise UsageError(f"{str(path)!r} must have the ROS parameter layout "
                         f"'{NODE}: ros__parameters: {{...}}'") from None
    if not isinstance(params, dict):
        raise UsageError(f"{str(path)!r}: {NODE}.ros__parameters must be a mapping")
    return dict(params)


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` from the command line; the value is parsed as YAML (1e-4, true, cpu)."""
    if "=" not in text:
        raise UsageError(f"override must look like key=value, got {text!r}")
    k, v = text.split("=", 1)
    return k.strip(), yaml.safe_load(v) if v.strip() else ""
