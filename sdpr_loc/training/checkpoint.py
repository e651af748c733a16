"""Checkpoints: atomic writes, and the full training state for an exact resume (loading a network
for inference lives in ``sdpr_loc.vision.weights`` and is re-exported here).

One format for everything: a dict with ``format``/``version``, the network ``model`` state dict
and its ``config`` (a plain dict, so loading never executes code). Training checkpoints add
optimizer, scheduler, RNG states and the position in the run (epoch, step in epoch, global
step), which is what an exact resume needs. A write goes to a temporary file in the same
directory, is fsynced and renamed over the target, so a run killed mid-write leaves the previous
checkpoint intact.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from sdpr_loc.files import atomic_write
from sdpr_loc.vision.network import KeypointNet
from sdpr_loc.vision.pipeline import LocalizerConfig
# loading weights for inference is a vision job (sdpr_loc.vision.weights); training re-exports it
from sdpr_loc.vision.weights import (FORMAT, VERSION, CheckpointError, load_checkpoint,  # noqa: F401
                                     load_localizer_config, load_network, load_state_checked,
                                     network_config_of)

__all__ = ["CheckpointError", "FORMAT", "VERSION", "atomic_save", "load_checkpoint", "save_network",
           "load_network", "load_localizer_config", "load_state_checked", "rng_state", "set_rng_state",
           "network_config_of"]

_PLAIN = (bool, int, float, str)


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to ``path`` via temp file + fsync + rename (never a half-written file)."""
    path = Path(path)
    with atomic_write(path) as f:
        torch.save(obj, f)
    return path


def _plain_dict(name: str, d: Mapping) -> dict:
    out = {}
    for k, v in d.items():
        if not isinstance(k, str) or not isinstance(v, _PLAIN):
            raise ValueError(f"{name}[{k!r}] = {v!r}: configs must map strings to int/float/str/bool")
        out[k] = v
    return out


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
