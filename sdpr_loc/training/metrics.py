"""Pose-error metrics and the run log (CSV + TensorBoard), resume-aware.

A resumed run first cuts the CSV rows and TensorBoard events written after the checkpoint it
resumes from, so the log of an interrupted-and-resumed run reads like an uninterrupted one.
"""
from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Mapping

import torch

from sdpr_loc.geometry.se3 import pose_error

Tensor = torch.Tensor

__all__ = ["pose_errors", "summarize", "RunLog"]


def pose_errors(T_est: Tensor, T_gt: Tensor) -> tuple[Tensor, Tensor]:
    """``(translation error [m], rotation error [deg])`` per item, both ``(B,)`` float64."""
    rot, trans = pose_error(T_est.detach().double(), T_gt.detach().double().to(T_est.device))
    return trans.cpu(), torch.rad2deg(rot).cpu()


def summarize(prefix: str, values: Mapping[str, list[float]]) -> dict[str, float]:
    """Mean (and median for errors) of lists of per-item values; NaN for empty lists."""
    out = {}
    for k, v in values.items():
        t = torch.tensor(v, dtype=torch.float64)
        out[f"{prefix}{k}_mean"] = float(t.mean()) if len(t) else math.nan
        if k.endswith("_err"):
            out[f"{prefix}{k}_median"] = float(t.median()) if len(t) else math.nan
    return out


class RunLog:
    """Append-only CSV files (``steps.csv``, ``epochs.csv``) and optional TensorBoard events.

    resume_step: on resume, drop rows whose ``step`` is beyond it (written after the checkpoint).
    enabled: False on non-zero DDP ranks (they log nothing).
    """

    def __init__(self, out_dir: str | os.PathLike, tensorboard: bool = True, resume_step: int | None = None,
                 enabled: bool = True):
        self.dir = Path(out_dir)
        self.enabled = enabled
        self.tb = None
        self._headers: dict[str, list[str]] = {}
        if not enabled:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        for name in ("steps.csv", "epochs.csv"):
            path = self.dir / name
            if resume_step is None:
                path.unlink(missing_ok=True)
            elif path.exists():
                _truncate(path, resume_step)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard not installed: CSV only
                SummaryWriter = None
            if SummaryWriter is not None:
                self.tb = SummaryWriter(str(self.dir / "tb"), purge_step=resume_step)

    def write(self, table: str, row: Mapping[str, float | int | str]) -> None:
        if not self.enabled:
            return
        path = self.dir / f"{table}.csv"
        if table not in self._headers:  # first write of this run: the header on disk, if any
            self._headers[table] = _header(path)
        head = self._headers[table]
        extra = [k for k in row if k not in head]
        if extra and head:  # a new column (e.g. the first evaluation): rewrite, wider header
            with open(path, newline="") as r:
                old = list(csv.DictReader(r))
            head += extra
            _rewrite(path, head, old)
        elif extra:
            head += extra
            with open(path, "w", newline="") as f:
                csv.writer(f).writerow(head)
        with open(path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=head, extrasaction="ignore", restval="").writerow(row)
        if self.tb is not None:
            step = int(row["step"])
            for k, v in row.items():
                if k not in ("step", "epoch") and isinstance(v, (int, float)) and math.isfinite(v):
                    self.tb.add_scalar(f"{table}/{k}", v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.flush()
            self.tb.close()
            self.tb = None


def _header(path: Path) -> list[str]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return next(csv.reader(f), [])


def _rewrite(path: Path, fieldnames: list[str], rows: list[dict]) -> None:
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fieldnames, restval="")
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def _truncate(path: Path, step: int) -> None:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    head, body = rows[0], rows[1:]
    if "step" not in head:
        return
    i = head.index("step")
    keep = [r for r in body if len(r) > i and r[i] and int(float(r[i])) <= step]
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(head)
        w.writerows(keep)
    os.replace(tmp, path)
