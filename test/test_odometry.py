"""Odometry evaluation: metrics against closed forms, and `sdpr-loc eval --odometry` end to end on a
drive whose frames are NOT 240x320 (as build-map / eval / the network must handle any size)."""
import csv
import math

import numpy as np
import pytest

from sdpr_loc.cli import main as cli
from sdpr_loc.data.bags import write_stereo_bag
from sdpr_loc.evaluation.odometry import (OdomFrame, kitti_errors, relative_errors, segment_lengths,
                                          summarize)
from sdpr_loc.vision.frontend import default_model_path

SIZE = (200, 296)  # H, W: neither 240x320 nor a multiple of the network's 16


def _straight(n, step=1.0):
    T = np.tile(np.eye(4), (n, 1, 1))
    T[:, 2, 3] = step * np.arange(n)
    return T


def test_scale_error_gives_its_percentage_everywhere():
    gt = _straight(61)                   # 60 m straight: segments of 10..60 m
    est = gt.copy()
    est[:, 2, 3] *= 1.02                 # 2 % scale error
    assert segment_lengths(60.0) == [10, 20, 30, 40, 50, 60]
    assert segment_lengths(250.0) == [100, 200]
    t_rel, r_rel, n = kitti_errors(gt, est, segment_lengths(60.0))
    assert t_rel == pytest.approx(2.0, abs=1e-9) and r_rel == pytest.approx(0.0, abs=1e-9) and n > 100
    rpe = relative_errors(gt, est)
    np.testing.assert_allclose(rpe[:, 0], 0.02, atol=1e-12)
    frames = [OdomFrame(i, gt[i], est[i], True, 50, 1.0) for i in range(61)]
    frames[30].T = None                  # one frame without a pose: not reported, not certified
    row = summarize("m", frames)
    assert row["drift_pct"] == pytest.approx(2.0, abs=1e-9)
    assert row["reported_rate"] == pytest.approx(59 / 60)
    assert row["certified_rate"] == 1.0 and row["uncertified_reported"] == 0
    assert row["rpe_trans_median_m"] == pytest.approx(0.02, abs=1e-12)


def test_rotation_error_in_degrees_per_100m():
    gt = _straight(21)
    est = gt.copy()
    a = math.radians(0.5)                # the estimate turns 0.5 deg per frame about y
    for i in range(21):
        c, s = math.cos(a * i), math.sin(a * i)
        est[i, :3, :3] = [[c, 0, s], [0, 1, 0], [-s, 0, c]]
    _, r_rel, _ = kitti_errors(gt, est, [10.0])
    assert r_rel == pytest.approx(100 * 10 * 0.5 / 10, rel=1e-9)   # 5 deg over 10 m = 50 deg/100 m


@pytest.fixture(scope="module")
def odd_bag(tmp_path_factory):
    from sdpr_loc.data.room import StereoRoom
    from sdpr_loc.data.synth import default_camera

    path = tmp_path_factory.mktemp("odom") / "room.mcap"
    cam = default_camera(*SIZE, fx=SIZE[1] / 2)
    write_stereo_bag(path, StereoRoom(seed=3).frames(6, cam))
    return path


def _rows(path):
    with open(path) as fh:
        return {r["method"]: r for r in csv.DictReader(fh)}


def test_eval_odometry_all_methods_on_non_standard_size(odd_bag, tmp_path):
    out = tmp_path / "odo"
    methods = "orb-certified,orb-svd,learned-certified,opencv-pnp"
    assert cli(["eval", "--odometry", str(odd_bag), "--methods", methods, "--out", str(out),
                "--model", str(default_model_path()), "--device", "cpu", "--features", "800"]) == 0
    rows = _rows(out / "odometry.csv")
    assert list(rows) == methods.split(",")
    for name, r in rows.items():
        assert int(r["frames"]) == 6
        assert float(r["reported_rate"]) == 1.0, (name, r)
        # 1 m of room drive at 0.2 m a frame: every method within a few cm per frame
        assert float(r["rpe_trans_median_m"]) < 0.05 and float(r["rpe_rot_median_deg"]) < 0.5, (name, r)
        assert float(r["drift_pct"]) < 25.0, (name, r)
    for certified in ("orb-certified", "learned-certified"):
        assert float(rows[certified]["certified_rate"]) == 1.0
        assert int(rows[certified]["uncertified_reported"]) == 0
    for baseline in ("orb-svd", "opencv-pnp"):    # baselines never claim a certificate
        assert float(rows[baseline]["certified_rate"]) == 0.0
    assert (out / "odometry.png").stat().st_size > 10_000
    with open(out / "odometry_frames.csv") as fh:
        assert sum(1 for _ in fh) == 1 + 4 * 6


def test_build_map_and_eval_on_non_standard_size(odd_bag, tmp_path):
    model = str(default_model_path())
    map_path = tmp_path / "map.npz"
    assert cli(["build-map", "--teach", str(odd_bag), "--model", model, "--out", str(map_path),
                "--device", "cpu", "--every-m", "0.01"]) == 0
    out = tmp_path / "eval"
    assert cli(["eval", "--map", str(map_path), "--repeat", str(odd_bag), "--model", model, "--out", str(out),
                "--device", "cpu", "--methods", "learned-certified"]) == 0
    r = _rows(out / "eval.csv")["learned-certified"]
    assert float(r["localized_rate"]) == 1.0 and float(r["median_trans_m"]) < 0.05


def test_eval_odometry_rejects_unknown_method(odd_bag, tmp_path, capsys):
    assert cli(["eval", "--odometry", str(odd_bag), "--methods", "magic", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sdpr-loc eval: error:") and "unknown odometry method" in err[0]
