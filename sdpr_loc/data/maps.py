"""Keyframe maps for teach-and-repeat localization, saved as a plain ``.npz``.

A map is a set of keyframes, each with its pose ``T_map_keyframe`` (maps points from that
keyframe's left optical frame into the map frame) and the stereo keypoints seen from it, in the
keyframe frame: points (K_i, 3), inverse covariances (K_i, 3, 3), descriptors (K_i, D), scores
(K_i,), pixels and disparities. The per-keyframe arrays are concatenated with an ``offsets``
table (M + 1,), so the file holds only numeric arrays and loads with ``allow_pickle=False``
(opening a map cannot run code). ``frontend`` records which keypoint extractor made the
descriptors: a map made with ORB cannot be matched against network descriptors.
"""
from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch

from sdpr_loc.errors import UserError
from sdpr_loc.files import atomic_write
from sdpr_loc.geometry.se3 import rotation_angle_deg
from sdpr_loc.vision.keypoints import StereoKeypoints

__all__ = ["KeyframeMap", "build_map", "MapError", "FORMAT_VERSION"]

FORMAT_VERSION = 1


class MapError(UserError, ValueError):
    """A map file that cannot be used (missing arrays, inconsistent shapes, bad poses)."""


@dataclass
class KeyframeMap:
    """Keyframes (M) with their keypoints; see the module docstring for the frames.

    poses (M, 4, 4) float64 T_map_keyframe; stamps (M,) int64 ns; offsets (M + 1,) int64 into the
    concatenated per-point arrays points (P, 3), inv_cov (P, 3, 3), descriptors (P, D), scores (P,),
    uv (P, 2), disparity (P,); frontend: descriptor kind, e.g. "orb" or "network".
    """

    poses: np.ndarray
    stamps: np.ndarray
    offsets: np.ndarray
    points: np.ndarray
    inv_cov: np.ndarray
    descriptors: np.ndarray
    scores: np.ndarray
    uv: np.ndarray
    disparity: np.ndarray
    frontend: str = "unknown"
    frame_id: str = "map"

    def __post_init__(self) -> None:
        self._check()

    # ----- construction -----
    @classmethod
    def from_keyframes(cls, keyframes: Iterable[tuple[np.ndarray, int, StereoKeypoints]],
                       frontend: str = "unknown", frame_id: str = "map") -> "KeyframeMap":
        """From (T_map_keyframe (4, 4), stamp_ns, StereoKeypoints with B = 1); keeps valid points."""
        poses, stamps, parts = [], [], []
        D = None
        for T, stamp, kp in keyframes:
            v = kp.valid[0].cpu().numpy().astype(bool)
            np_ = lambda x: x[0].detach().cpu().numpy()[v]  # noqa: E731
            parts.append((np_(kp.points), np_(kp.inv_cov), np_(kp.descriptors), np_(kp.scores),
                          np_(kp.uv), np_(kp.disparity)))
            D = kp.descriptors.shape[-1] if D is None else D
            if kp.descriptors.shape[-1] != D:
                raise MapError(f"descriptor length changed from {D} to {kp.descriptors.shape[-1]}")
            poses.append(np.asarray(T, dtype=np.float64))
            stamps.append(int(stamp))
        D = D or 0
        counts = [p[0].shape[0] for p in parts]
        cat = lambda i, shape: (np.concatenate([p[i] for p in parts]) if parts  # noqa: E731
                                else np.zeros((0, *shape))).astype(np.float32)
        return cls(poses=np.asarray(poses, dtype=np.float64).reshape(-1, 4, 4),
                   stamps=np.asarray(stamps, dtype=np.int64),
                   offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
                   points=cat(0, (3,)), inv_cov=cat(1, (3, 3)), descriptors=cat(2, (D,)),
                   scores=cat(3, ()), uv=cat(4, (2,)), disparity=cat(5, ()),
                   frontend=frontend, frame_id=frame_id)

    def _check(self) -> None:
        M = self.poses.shape[0] if self.poses.ndim == 3 else -1
        if self.poses.shape[1:] != (4, 4):
            raise MapError(f"poses must be (M, 4, 4), got {self.poses.shape}")
        if self.stamps.shape != (M,) or self.offsets.shape != (M + 1,):
            raise MapError(f"stamps {self.stamps.shape} / offsets {self.offsets.shape} do not fit M = {M}")
        P = self.points.shape[0]
        if self.offsets[0] != 0 or self.offsets[-1] != P or (np.diff(self.offsets) < 0).any():
            raise MapError("offsets must rise from 0 to the number of points")
        for name, tail in (("points", (3,)), ("inv_cov", (3, 3)), ("scores", ()), ("uv", (2,)),
                           ("disparity", ())):
            a = getattr(self, name)
            if a.shape != (P, *tail):
                raise MapError(f"{name} must be {(P, *tail)}, got {a.shape}")
        if self.descriptors.ndim != 2 or self.descriptors.shape[0] != P:
            raise MapError(f"descriptors must be (P, D) with P = {P}, got {self.descriptors.shape}")
        for name in ("poses", "points", "inv_cov", "descriptors", "scores"):
            if not np.isfinite(getattr(self, name)).all():
                raise MapError(f"map {name} contain NaN or inf")
        R = self.poses[:, :3, :3]
        if M and (np.abs(R @ R.transpose(0, 2, 1) - np.eye(3)).max() > 1e-5
                  or np.abs(self.poses[:, 3] - [0, 0, 0, 1]).max() > 1e-9
                  or (np.linalg.det(R) < 0).any()):
            raise MapError("keyframe poses must be rigid transforms (orthonormal R, det +1, last row 0 0 0 1)")

    # ----- access -----
    def __len__(self) -> int:
        return int(self.poses.shape[0])

    @property
    def descriptor_dim(self) -> int:
        return int(self.descriptors.shape[1])

    def keyframe(self, i: int, dtype: torch.dtype = torch.float32) -> StereoKeypoints:
        """Keypoints of keyframe ``i`` (B = 1, all valid), in the keyframe's optical frame."""
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        t = lambda x: torch.from_numpy(np.ascontiguousarray(x[a:b])).to(dtype)[None]  # noqa: E731
        return StereoKeypoints(uv=t(self.uv), disparity=t(self.disparity), points=t(self.points),
                               inv_cov=t(self.inv_cov), scores=t(self.scores),
                               descriptors=t(self.descriptors),
                               valid=torch.ones(1, b - a, dtype=torch.bool))

    def nearest(self, T_prior: np.ndarray, k: int = 1, metres_per_rad: float = 5.0) -> np.ndarray:
        """Indices (k,) of the keyframes closest to the pose ``T_prior`` (4, 4), nearest first.

        Distance = |translation difference| + ``metres_per_rad`` * rotation angle: a keyframe
        facing elsewhere shares few keypoints even when it is close.
        """
        if len(self) == 0:
            raise MapError("the map has no keyframes")
        T = np.asarray(T_prior, dtype=np.float64)
        dt = np.linalg.norm(self.poses[:, :3, 3] - T[:3, 3], axis=1)
        dr = np.radians(rotation_angle_deg(self.poses[:, :3, :3], T[:3, :3]))
        return np.argsort(dt + metres_per_rad * dr, kind="stable")[: max(1, int(k))]

    VOTE_CHUNK = 1 << 16  # map descriptors compared at once by :meth:`candidates`

    def candidates(self, descriptors, k: int = 5) -> np.ndarray:
        """Indices (<= k,) of the keyframes most of a frame's unit ``descriptors (N, D)`` (a
        frame's ``place_descriptors``) point to, best first: each descriptor votes for the
        keyframe holding its nearest map descriptor (cosine), ties broken by the summed
        similarity. A keyframe of the same place holds the nearest neighbours of many of them, day
        or night; a mean descriptor per keyframe did not tell night places apart (validation
        worlds 103 / 104, a true keyframe among the first three: 12 / 26 % of night frames
        against 100 / 96 % by votes). Cost: linear in the map's descriptors, in chunks of
        :attr:`VOTE_CHUNK`."""
        q = torch.as_tensor(descriptors).detach().cpu().to(torch.float32).numpy()
        if q.ndim != 2:
            raise ValueError(f"descriptors must be (N, D), got {tuple(q.shape)}")
        if len(self) == 0 or q.shape[0] == 0 or q.shape[1] != self.descriptor_dim:
            return np.zeros(0, dtype=np.int64)
        # numpy's BLAS, not torch's: the map is numpy already, and torch's MKL sgemm ran this
        # product 2-4x slower on the AMD CPU measured (bench/place_recognition.py)
        best = np.full(q.shape[0], -2.0, dtype=np.float32)
        arg = np.zeros(q.shape[0], dtype=np.int64)
        rows = np.arange(q.shape[0])
        for a in range(0, len(self.descriptors), self.VOTE_CHUNK):
            sim = q @ np.asarray(self.descriptors[a:a + self.VOTE_CHUNK], dtype=np.float32).T
            j = sim.argmax(1)
            s = sim[rows, j]
            better = s > best
            best, arg = np.where(better, s, best), np.where(better, j + a, arg)
        owner = np.searchsorted(self.offsets, arg, side="right") - 1
        votes = np.bincount(owner, minlength=len(self)).astype(np.float64)
        score = votes + 1e-6 * np.bincount(owner, weights=best.astype(np.float64), minlength=len(self))
        order = np.argsort(-score, kind="stable")
        return order[votes[order] > 0][: max(1, int(k))]

    # ----- files -----
    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically (:func:`~sdpr_loc.files.atomic_write`): a crash never leaves half a map."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_suffix(".npz")
        with atomic_write(path) as fh:
            np.savez_compressed(
                fh, format_version=np.int64(FORMAT_VERSION), poses=self.poses, stamps=self.stamps,
                offsets=self.offsets, points=self.points, inv_cov=self.inv_cov,
                descriptors=self.descriptors, scores=self.scores, uv=self.uv,
                disparity=self.disparity, frontend=np.str_(self.frontend),
                frame_id=np.str_(self.frame_id))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "KeyframeMap":
        """Read a map written by :meth:`save`; MapError (with the path) when it is not one."""
        path = Path(path)
        if not path.is_file():
            raise MapError(f"map file {str(path)!r} does not exist")
        if not zipfile.is_zipfile(path):  # np.load would try it as a pickle and blame allow_pickle
            raise MapError(f"cannot read map {str(path)!r}: not an .npz archive (truncated or corrupt?)")
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except Exception as err:  # noqa: BLE001 - any decode failure means "not a map"
            raise MapError(f"cannot read map {str(path)!r}: {type(err).__name__}: {err}") from err
        version = int(data.pop("format_version", -1))
        if version != FORMAT_VERSION:
            raise MapError(f"map {str(path)!r} has format version {version}, expected {FORMAT_VERSION}")
        need = ("poses", "stamps", "offsets", "points", "inv_cov", "descriptors", "scores", "uv", "disparity")
        missing = [k for k in need if k not in data]
        if missing:
            raise MapError(f"map {str(path)!r} lacks arrays {missing}")
        try:
            return cls(**{k: data[k] for k in need}, frontend=str(data.get("frontend", "unknown")),
                       frame_id=str(data.get("frame_id", "map")))
        except MapError as err:
            raise MapError(f"map {str(path)!r}: {err}") from None


def build_map(frames: Iterable[Any], extractor: Callable[..., StereoKeypoints], every_m: float = 1.0,
              every_deg: float = 10.0, min_points: int = 20, frontend: str = "unknown",
              frame_id: str = "map") -> KeyframeMap:
    """Keyframe map of a teach drive.

    Args:
        frames: StereoFrame-like items (``left``, ``right``, ``camera``, ``stamp_ns``, ``pose`` =
            T_map_camera or None); frames without a pose are skipped.
        extractor: ``extractor(left, right, camera) -> StereoKeypoints`` (B = 1).
        every_m, every_deg: a new keyframe once the camera has moved this far or turned this much
            since the last one.
        min_points: a frame with fewer valid keypoints does not become a keyframe (the next does).
    """
    if not (every_m > 0 and every_deg > 0):
        raise ValueError(f"every_m and every_deg must be positive, got {every_m}, {every_deg}")
    keyframes: list[tuple[np.ndarray, int, StereoKeypoints]] = []
    last: np.ndarray | None = None
    for fr in frames:
        if fr.pose is None:
            continue
        T = np.asarray(fr.pose, dtype=np.float64)
        if last is not None:
            moved = np.linalg.norm(T[:3, 3] - last[:3, 3])
            turned = rotation_angle_deg(last[:3, :3], T[:3, :3])
            if moved < every_m and turned < every_deg:
                continue
        kp = extractor(fr.left, fr.right, fr.camera)
        if int(kp.valid[0].sum()) < min_points:
            continue
        keyframes.append((T, int(fr.stamp_ns), kp.detach().to("cpu")))
        last = T
    return KeyframeMap.from_keyframes(keyframes, frontend=frontend, frame_id=frame_id)
