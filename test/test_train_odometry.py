"""`sdpr-loc train --odometry`: consecutive frames of real-style drives (no teach/repeat pair) as
training pairs, with their ground-truth relative pose."""
import argparse
import csv
import math

import numpy as np
import pytest

from sdpr_loc.cli import main as cli
from sdpr_loc.data.bags import write_stereo_bag
from sdpr_loc.training.config import load_params
from sdpr_loc.training.train_cli import build_datasets


@pytest.fixture(scope="module")
def drive(tmp_path_factory):
    from sdpr_loc.data.room import StereoRoom
    from sdpr_loc.data.synth import default_camera

    path = tmp_path_factory.mktemp("todo") / "drive.mcap"
    write_stereo_bag(path, StereoRoom(seed=2).frames(7, default_camera(64, 96, fx=48.0)))
    return path


def _args(tmp_path, **kw):
    base = dict(teach=None, repeat=None, val_teach=None, val_repeat=None, odometry=None, val_odometry=None,
                stride=1, out=tmp_path, cache_dir=None)
    return argparse.Namespace(**{**base, **kw})


def test_pairs_are_consecutive_frames_with_ground_truth(drive, tmp_path):
    from sdpr_loc.data.bags import StereoBag

    params = load_params(None, {"val_fraction": 0.0})
    train, val = build_datasets(_args(tmp_path, odometry=[drive], val_odometry=[drive], stride=2), params)
    assert len(train) == 5 and len(val) == 5
    poses = [f.pose for f in StereoBag(drive)]
    item = train[1]   # target frame 1, source frame 3
    np.testing.assert_allclose(item["T_target_source"].numpy(), np.linalg.inv(poses[1]) @ poses[3], atol=1e-12)
    with pytest.raises(ValueError, match="either --odometry or --teach"):
        build_datasets(_args(tmp_path, odometry=[drive], teach=[drive], repeat=[drive]), params)
    with pytest.raises(ValueError, match="--odometry bags"):
        build_datasets(_args(tmp_path), params)


def test_cli_fine_tunes_on_consecutive_frames(drive, tmp_path):
    out = tmp_path / "run"
    assert cli(["train", "--odometry", str(drive), "--out", str(out), "--device", "cpu", "--max-steps", "2",
                "--no-progress", "--set", "width=8", "--set", "cell=8", "--set", "max_disparity=24",
                "--set", "batch_size=2", "--set", "val_fraction=0", "--set", "tensorboard=false"]) == 0
    rows = list(csv.DictReader(open(out / "steps.csv")))
    assert len(rows) == 2 and all(math.isfinite(float(r["loss"])) for r in rows)
    assert (out / "model.pt").exists()
