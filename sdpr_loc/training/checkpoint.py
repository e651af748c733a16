"""Checkpoints: atomic writes, safe loads (``weights_only=True``) and errors that name the problem.

One format for everything: a dict with ``format``/``version``, the network ``model`` state dict
and its ``config`` (a plain dict, so loading never executes code). Training checkpoints add
optimizer, scheduler, RNG states and the position in the run (epoch, step in epoch, global
step), which is what an exact resume needs. A write goes to a temporary file in the same
directory, is fsynced and renamed over the target, so a run killed mid-write leaves the previous
checkpoint intact.
"""
from __future__ import annotations

import os
import pickle
import random
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from sdpr_loc.errors import UserError
from sdpr_loc.vision.network import KeypointNet, NetworkConfig
from sdpr_loc.vision.pipeline import LocalizerConfig

__all__ = ["CheckpointError", "FORMAT", "VERSION", "atomic_save", "load_checkpoint", "save_network",
           "load_network", "load_localizer_config", "load_state_checked", "rng_state", "set_rng_state",
           "network_config_of"]

FORMAT = "sdpr_loc.keypoint_net"
VERSION = 1
_PLAIN = (bool, int, float, str)


class CheckpointError(UserError, ValueError):
    """A checkpoint is unreadable, of another format, or does not fit the model."""


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to ``path`` via temp file + fsync + rename (never a half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        try:  # make the rename itself durable
            dfd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:
            pass
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _plain_dict(name: str, d: Mapping) -> dict:
    out = {}
    for k, v in d.items():
        if not isinstance(k, str) or not isinstance(v, _PLAIN):
            raise ValueError(f"{name}[{k!r}] = {v!r}: configs must map strings to int/float/str/bool")
        out[k] = v
    return out


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                    require: tuple[str, ...] = ("model", "config")) -> dict:
    """Load safely (``weights_only=True``) and check the format and the ``require``d keys."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; torch.load's own error misleads
        raise CheckpointError(f"cannot read checkpoint {str(path)!r}: not a zip archive "
                              "(truncated, corrupt, or not a torch checkpoint?)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, OSError, ValueError, AttributeError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"cannot read checkpoint {str(path)!r}: {msg} "
                              "(truncated, corrupt, or not a torch checkpoint?)") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        got = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{str(path)!r} is not an sdpr_loc keypoint checkpoint "
                              f"(format {got!r}, expected {FORMAT!r})")
    if int(ckpt.get("version", -1)) > VERSION:
        raise CheckpointError(f"{str(path)!r} has version {ckpt.get('version')}, newer than this "
                              f"sdpr_loc ({VERSION}); upgrade the package")
    missing = [k for k in require if k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint {str(path)!r} lacks key(s) {missing} "
                              f"(has {sorted(ckpt)})")
    return ckpt


def network_config_of(ckpt: Mapping, path: str = "<checkpoint>") -> NetworkConfig:
    try:
        return NetworkConfig.from_dict(ckpt["config"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path!r}: bad network config: {e}") from None


def load_state_checked(module: torch.nn.Module, state: Mapping[str, torch.Tensor], what: str = "checkpoint",
                       prefixes: tuple[str, ...] = ()) -> None:
    """``load_state_dict`` that lists every missing, unexpected or mis-shaped key first.

    prefixes: load only keys starting with one of them (empty: all), for partial fine-tuning.
    """
    own = module.state_dict()
    keys = [k for k in own if not prefixes or k.startswith(prefixes)]
    problems = []
    missing = [k for k in keys if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing:
        problems.append(f"missing keys {missing[:8]}{' ...' if len(missing) > 8 else ''}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}")
    for k in keys:
        if k in state:
            a, b = state[k], own[k]
            if not isinstance(a, torch.Tensor):
                problems.append(f"key {k!r} is a {type(a).__name__}, not a tensor")
            elif a.shape != b.shape:
                problems.append(f"key {k!r}: checkpoint shape {tuple(a.shape)} vs model {tuple(b.shape)}")
    if problems:
        raise CheckpointError(f"{what} does not fit the model: " + "; ".join(problems))
    module.load_state_dict({k: state[k] for k in keys}, strict=not prefixes)


def save_network(path: str | os.PathLike, network: KeypointNet,
                 localizer: LocalizerConfig | None = None, extra: Mapping[str, Any] | None = None) -> Path:
    """Network-only checkpoint (what models/ ships): weights + configs + optional plain metadata."""
    ckpt = {"format": FORMAT, "version": VERSION,
            "model": {k: v.detach().cpu() for k, v in network.state_dict().items()},
            "config": _plain_dict("config", network.config.to_dict())}
    if localizer is not None:
        ckpt["localizer"] = _plain_dict("localizer", localizer.to_dict())
    if extra:
        ckpt["meta"] = _plain_dict("meta", extra)
    return atomic_save(ckpt, path)


def load_network(path: str | os.PathLike, device: str | torch.device = "cpu") -> KeypointNet:
    """A KeypointNet built from the checkpoint's own config, weights loaded, in eval mode."""
    ckpt = load_checkpoint(path)
    net = KeypointNet(network_config_of(ckpt, str(path)))
    load_state_checked(net, ckpt["model"], f"checkpoint {str(path)!r}")
    return net.to(device).eval()


def load_localizer_config(path: str | os.PathLike) -> LocalizerConfig | None:
    """The matching settings a checkpoint was trained with (None if it has none)."""
    ckpt = load_checkpoint(path)
    return LocalizerConfig.from_dict(ckpt["localizer"]) if "localizer" in ckpt else None


# ------------------------------------------------------------------------------------------------
# RNG states as tensors and plain values (weights_only-loadable)
# ------------------------------------------------------------------------------------------------
def rng_state() -> dict:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached": float(cached)},
             "python": _py_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _py_state() -> dict:
    version, internal, gauss = random.getstate()
    return {"version": int(version), "internal": list(internal), "gauss": gauss}


def set_rng_state(state: Mapping) -> None:
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
