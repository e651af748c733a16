"""Training pairs from bags: keyframe matching, relative ground truth, index cache, odometry."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from sdpr_loc.data.bags import StereoBag, write_stereo_bag
from sdpr_loc.data.dataset import (CameraMismatchError, MissingGroundTruthError, OdometryDataset,
                                   PairDataset)
from sdpr_loc.data.synth import default_camera, drive_poses, make_world, render_drive

CAM = default_camera(120, 160)
N_TEACH, N_REPEAT = 30, 24


@pytest.fixture(scope="module")
def drives(tmp_path_factory):
    d = tmp_path_factory.mktemp("drives")
    world = make_world(2)
    write_stereo_bag(d / "teach.mcap", render_drive(world, "teach", "day", N_TEACH, CAM))
    write_stereo_bag(d / "repeat.db3", render_drive(world, "repeat", "night", N_REPEAT, CAM, seed=1))
    return {"dir": d, "world": world, "teach": d / "teach.mcap", "repeat": d / "repeat.db3",
            "T_teach": drive_poses(world, "teach", N_TEACH),
            "T_repeat": drive_poses(world, "repeat", N_REPEAT, seed=1)}


def _angle_deg(Ra, Rb):
    c = (np.trace(Ra.T @ Rb) - 1) / 2
    return np.degrees(np.arccos(np.clip(c, -1, 1)))


def test_pairs_are_nearest_keyframes_with_ground_truth_relative_pose(drives):
    ds = PairDataset(drives["teach"], drives["repeat"], max_dist=1.5, max_angle_deg=10.0)
    Tt, Tr = drives["T_teach"], drives["T_repeat"]
    # brute-force reference from the generator's poses
    expected = []
    for i in range(N_REPEAT):
        d = np.linalg.norm(Tt[:, :3, 3] - Tr[i, :3, 3], axis=1)
        ok = (d <= 1.5) & np.array([_angle_deg(Tt[j, :3, :3], Tr[i, :3, :3]) <= 10 for j in range(N_TEACH)])
        if ok.any():
            expected.append((i, int(np.flatnonzero(ok)[np.argmin(d[ok])])))
    assert [tuple(p) for p in ds.pairs] == expected
    assert len(ds) >= N_REPEAT - 4
    teach_frames = list(StereoBag(drives["teach"]))
    repeat_frames = list(StereoBag(drives["repeat"]))
    for k in (0, len(ds) // 2, len(ds) - 1):
        item = ds[k]
        i, j = expected[k]
        assert item["source"].shape == (2, 120, 160) and item["source"].dtype == torch.float32
        np.testing.assert_array_equal(item["source"][0].numpy(), repeat_frames[i].left)
        np.testing.assert_array_equal(item["source"][1].numpy(), repeat_frames[i].right)
        np.testing.assert_array_equal(item["target"][0].numpy(), teach_frames[j].left)
        T = item["T_target_source"]
        assert T.dtype == torch.float64 and T.shape == (4, 4)
        np.testing.assert_allclose(T.numpy(), np.linalg.inv(Tt[j]) @ Tr[i], atol=1e-9)
        # the relative pose maps the live camera centre to its place in the keyframe frame
        c_live_in_key = np.linalg.inv(Tt[j]) @ np.append(Tr[i, :3, 3], 1.0)
        np.testing.assert_allclose(T.numpy()[:3, 3], c_live_in_key[:3], atol=1e-9)
        np.testing.assert_allclose(item["camera"].numpy(),
                                   [CAM.fx, CAM.fy, CAM.cx, CAM.cy, CAM.baseline])
        assert int(item["source_stamp_ns"]) == repeat_frames[i].stamp_ns
        assert int(item["target_stamp_ns"]) == teach_frames[j].stamp_ns


def test_thresholds_and_keyframe_spacing(drives):
    tight = PairDataset(drives["teach"], drives["repeat"], max_dist=0.3, max_angle_deg=10.0)
    loose = PairDataset(drives["teach"], drives["repeat"], max_dist=3.0, max_angle_deg=30.0)
    assert len(tight) < len(loose)
    for ds, dmax in ((tight, 0.3), (loose, 3.0)):
        t = torch.stack([ds[k]["T_target_source"][:3, 3] for k in range(len(ds))])
        assert float(t.norm(dim=1).max()) <= dmax + 1e-9
    none = PairDataset(drives["teach"], drives["repeat"], max_dist=3.0, max_angle_deg=0.01)
    assert len(none) == 0
    sparse = PairDataset(drives["teach"], drives["repeat"], max_dist=3.0, keyframe_spacing=2.0)
    kf = drives["T_teach"][sparse.keyframes, :3, 3]
    assert np.all(np.linalg.norm(np.diff(kf, axis=0), axis=1) >= 2.0 - 1e-9)
    assert set(sparse.pairs[:, 1]) <= set(sparse.keyframes)
    with pytest.raises(ValueError):
        PairDataset(drives["teach"], drives["repeat"], max_dist=0)


def test_index_cache_is_keyed_by_checksum(drives, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = PairDataset(drives["teach"], drives["repeat"], cache_dir=cache)
    files = sorted(cache.glob("index-*.npz"))
    assert len(files) == 2

    def no_index(self):
        raise AssertionError("the cached index should have been used")

    monkeypatch.setattr(StereoBag, "index", no_index)
    again = PairDataset(drives["teach"], drives["repeat"], cache_dir=cache)
    np.testing.assert_array_equal(first.pairs, again.pairs)
    np.testing.assert_array_equal(again[3]["source"].numpy(), first[3]["source"].numpy())
    monkeypatch.undo()
    # a different bag at the same path gets a new cache entry
    other = tmp_path / "teach.mcap"
    write_stereo_bag(other, render_drive(drives["world"], "teach", "dusk", 5, CAM))
    PairDataset(other, drives["repeat"], cache_dir=cache)
    write_stereo_bag(other, render_drive(drives["world"], "teach", "day", 5, CAM), overwrite=True)
    PairDataset(other, drives["repeat"], cache_dir=cache)
    assert len(list(cache.glob("index-*.npz"))) == 4


def test_odometry_pairs(drives):
    ds = OdometryDataset(drives["teach"], stride=2)
    T = drives["T_teach"]
    assert len(ds) == N_TEACH - 2
    item = ds[5]
    np.testing.assert_allclose(item["T_target_source"].numpy(), np.linalg.inv(T[5]) @ T[7], atol=1e-9)
    assert item["T_target_source"][2, 3] > 0.9  # the source frame is 1 m further ahead
    assert int(item["source_stamp_ns"]) - int(item["target_stamp_ns"]) == 200_000_000
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert batch["source"].shape == (3, 2, 120, 160) and batch["camera"].shape == (3, 5)
    with pytest.raises(ValueError, match="stride"):
        OdometryDataset(drives["teach"], stride=0)


def test_dataset_survives_pickling_for_workers(drives):
    ds = PairDataset(drives["teach"], drives["repeat"])
    clone = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(clone[1]["target"].numpy(), ds[1]["target"].numpy())


def test_bags_without_ground_truth_or_with_other_cameras(drives, tmp_path):
    world = drives["world"]
    no_gt = tmp_path / "nogt.mcap"
    write_stereo_bag(no_gt, render_drive(world, "teach", "day", 3, CAM), topics={"pose": None})
    with pytest.raises(MissingGroundTruthError, match="ground-truth"):
        PairDataset(drives["teach"], no_gt)
    with pytest.raises(MissingGroundTruthError):
        OdometryDataset(no_gt)
    other = tmp_path / "other.mcap"
    write_stereo_bag(other, render_drive(world, "repeat", "day", 3, default_camera(96, 128)))
    with pytest.raises(CameraMismatchError, match="camera"):
        PairDataset(drives["teach"], other)
