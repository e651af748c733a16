"""Training pairs from stereo bags, as torch Datasets.

* :class:`PairDataset` (teach and repeat, i.e. localisation): every live frame of a repeat bag
  with the nearest keyframe of the teach bag by ground truth (within a distance and an angle),
  and the relative ground truth ``T_target_source = T_keyframe_live``.
* :class:`OdometryDataset`: frame ``i`` (target) and frame ``i + stride`` (source) of one bag.

Items are dicts of tensors: ``source`` and ``target`` (2, H, W) float32 left/right images,
``T_target_source`` (4, 4) float64 mapping points from the source (live) camera frame into the
target (keyframe) camera frame, ``camera`` (5,) float64 ``[fx, fy, cx, cy, baseline]``, and
``source_stamp_ns`` / ``target_stamp_ns``. Bags are read at random (no whole-bag loading) from a
per-bag frame index built in one streaming pass and cached on disk under the bag's checksum, so a
bag is indexed once however many runs and workers use it.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from torch.utils.data import Dataset

from .bags import BagIndex, StereoBag, StereoTopics, bag_checksum
from .errors import BagError
from sdpr_loc.files import atomic_write
from sdpr_loc.geometry.se3 import rotation_angle_deg

__all__ = ["PairDataset", "OdometryDataset", "load_index", "relative_pose", "rotation_angle_deg",
           "MissingGroundTruthError", "CameraMismatchError"]


class MissingGroundTruthError(BagError):
    """Pairs need ground-truth poses, and the bag has none (or too few)."""


class CameraMismatchError(BagError):
    """Teach and repeat bags were recorded with different camera models."""


def relative_pose(T_world_target: np.ndarray, T_world_source: np.ndarray) -> np.ndarray:
    """``T_target_source = T_world_target^-1 T_world_source`` (rigid inverse, float64)."""
    Tt = np.asarray(T_world_target, dtype=np.float64)
    Ts = np.asarray(T_world_source, dtype=np.float64)
    R, t = Tt[..., :3, :3], Tt[..., :3, 3]
    inv = np.zeros_like(Tt)
    Rt = np.swapaxes(R, -1, -2)
    inv[..., :3, :3] = Rt
    inv[..., :3, 3] = -(Rt @ t[..., None])[..., 0]
    inv[..., 3, 3] = 1.0
    return inv @ Ts


def _cache_key(bag: StereoBag) -> str:
    """Bag checksum plus everything that changes the index (topics, tolerance)."""
    tp = bag.topics
    extra = f"{tp.left}|{tp.right}|{tp.left_info}|{tp.right_info}|{tp.pose}|{bag.tolerance_ns}"
    if bag.camera_override is not None:
        c = bag.camera_override
        extra += f"|{c.fx}|{c.fy}|{c.cx}|{c.cy}|{c.baseline}"
    return bag_checksum(bag.path) + "-" + hashlib.blake2b(extra.encode(), digest_size=4).hexdigest()


def load_index(bag: StereoBag, cache_dir: str | os.PathLike | None = None) -> BagIndex:
    """The bag's frame index, from ``cache_dir`` when an index of this exact bag is there."""
    if cache_dir is None:
        return bag.index()
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"index-{_cache_key(bag)}.npz"
    if path.exists():
        try:
            idx = BagIndex.load(path)
            bag.set_index(idx)
            return idx
        except (OSError, KeyError, ValueError):
            path.unlink(missing_ok=True)  # damaged cache entry: rebuild it
    idx = bag.index()
    with atomic_write(path) as fh:     # concurrent workers never see half a file
        idx.save(fh)
    return idx


def _open(bag, topics, tolerance_ns) -> StereoBag:
    if isinstance(bag, StereoBag):
        return bag
    return StereoBag(bag, topics=topics, tolerance_ns=tolerance_ns)


def _images(frame) -> torch.Tensor:
    return torch.from_numpy(np.stack([frame.left, frame.right]))


def _cam_tensor(row: np.ndarray) -> torch.Tensor:
    return torch.tensor(row[:5], dtype=torch.float64)


class _PairsBase(Dataset):
    source_bag: StereoBag
    target_bag: StereoBag
    source_index: BagIndex
    target_index: BagIndex
    pairs: np.ndarray  # (N, 2): source frame, target frame

    def __len__(self) -> int:
        return int(len(self.pairs))

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"pair {i} out of range for {len(self)} pairs")
        si, ti = (int(v) for v in self.pairs[i])
        src = self.source_bag.read(si)
        tgt = self.target_bag.read(ti)
        T = relative_pose(self.target_index.poses[ti], self.source_index.poses[si])
        return {
            "source": _images(src),
            "target": _images(tgt),
            "T_target_source": torch.from_numpy(T),
            "camera": _cam_tensor(self.source_index.cameras[si]),
            "source_stamp_ns": torch.tensor(src.stamp_ns, dtype=torch.int64),
            "target_stamp_ns": torch.tensor(tgt.stamp_ns, dtype=torch.int64),
        }


def _require_poses(idx: BagIndex, bag: StereoBag, what: str) -> None:
    if len(idx) == 0:
        raise MissingGroundTruthError(f"{what} bag {str(bag.path)!r} has no stereo frames")
    if not idx.has_pose.any():
        raise MissingGroundTruthError(
            f"{what} bag {str(bag.path)!r} has no ground-truth poses on "
            f"{bag.topics.pose!r}; pairs need geometry_msgs/PoseStamped ground truth")


class PairDataset(_PairsBase):
    """Live frames of a repeat drive with their nearest teach keyframe.

    teach_bag, repeat_bag: paths or :class:`StereoBag`; both need ground truth in one world
    frame. A live frame pairs with the keyframe nearest in position among those within
    ``max_dist`` metres and ``max_angle_deg`` of rotation; live frames without one are left
    out. ``keyframe_spacing`` (m) thins the teach frames to keyframes at least that far apart
    (0: every teach frame). ``cache_dir`` caches the bag indexes.
    Item ``source`` = live (repeat) frame, ``target`` = keyframe, ``T_target_source`` =
    ``T_keyframe_live``.
    """

    def __init__(self, teach_bag, repeat_bag, max_dist: float = 2.0, max_angle_deg: float = 20.0,
                 cache_dir: str | os.PathLike | None = None,
                 topics: StereoTopics | Mapping[str, str | None] | None = None,
                 tolerance_ns: int = 5_000_000, keyframe_spacing: float = 0.0) -> None:
        if not max_dist > 0 or not max_angle_deg > 0:
            raise ValueError("max_dist and max_angle_deg must be positive")
        self.target_bag = _open(teach_bag, topics, tolerance_ns)
        self.source_bag = _open(repeat_bag, topics, tolerance_ns)
        self.target_index = load_index(self.target_bag, cache_dir)
        self.source_index = load_index(self.source_bag, cache_dir)
        _require_poses(self.target_index, self.target_bag, "teach")
        _require_poses(self.source_index, self.source_bag, "repeat")
        self._check_cameras()
        self.max_dist, self.max_angle_deg = float(max_dist), float(max_angle_deg)
        keys = self._keyframes(float(keyframe_spacing))
        self.keyframes = keys
        self.pairs = self._match(keys)

    def _check_cameras(self) -> None:
        a, b = self.target_index.cameras[:, :7], self.source_index.cameras[:, :7]
        ref = a[0]
        for name, cams in (("teach", a), ("repeat", b)):
            bad = np.flatnonzero(~np.all(np.isclose(cams, ref, rtol=1e-6, atol=1e-9), axis=1))
            if bad.size:
                raise CameraMismatchError(
                    f"{name} frame {bad[0]} has camera [fx, fy, cx, cy, B, w, h] = "
                    f"{cams[bad[0]].tolist()}, the teach drive starts with {ref.tolist()}; "
                    "pairs need one camera model")

    def _keyframes(self, spacing: float) -> np.ndarray:
        idx = self.target_index
        frames = np.flatnonzero(idx.has_pose)
        if spacing <= 0:
            return frames
        keep = [frames[0]]
        for f in frames[1:]:
            if np.linalg.norm(idx.poses[f, :3, 3] - idx.poses[keep[-1], :3, 3]) >= spacing:
                keep.append(f)
        return np.asarray(keep)

    def _match(self, keys: np.ndarray) -> np.ndarray:
        from scipy.spatial import cKDTree

        tp, sp = self.target_index.poses, self.source_index.poses
        live = np.flatnonzero(self.source_index.has_pose)
        tree = cKDTree(tp[keys, :3, 3])
        pairs = []
        for si in live:
            cand = tree.query_ball_point(sp[si, :3, 3], self.max_dist)
            if not cand:
                continue
            cand = keys[np.asarray(cand)]
            dist = np.linalg.norm(tp[cand, :3, 3] - sp[si, :3, 3], axis=1)
            ang = rotation_angle_deg(tp[cand, :3, :3], sp[si, :3, :3])
            ok = ang <= self.max_angle_deg
            if ok.any():
                pairs.append((si, cand[ok][np.argmin(dist[ok])]))
        return np.asarray(pairs, dtype=np.int64).reshape(-1, 2)


class OdometryDataset(_PairsBase):
    """Consecutive frames of one bag: target = frame i, source = frame i + stride."""

    def __init__(self, bag, stride: int = 1, cache_dir: str | os.PathLike | None = None,
                 topics: StereoTopics | Mapping[str, str | None] | None = None,
                 tolerance_ns: int = 5_000_000) -> None:
        if int(stride) < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        self.stride = int(stride)
        self.source_bag = self.target_bag = _open(bag, topics, tolerance_ns)
        self.source_index = self.target_index = load_index(self.source_bag, cache_dir)
        _require_poses(self.source_index, self.source_bag, "odometry")
        has = self.source_index.has_pose
        i = np.arange(max(len(has) - self.stride, 0))
        ok = has[i] & has[i + self.stride]
        self.pairs = np.stack([i[ok] + self.stride, i[ok]], 1).astype(np.int64).reshape(-1, 2)
