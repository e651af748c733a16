"""build-map and eval end to end on a tiny synthetic bag pair, through the CLI."""
import csv
import dataclasses
import math

import numpy as np
import pytest

from sdpr_loc.cli import main as cli
from sdpr_loc.data.bags import write_stereo_bag
from sdpr_loc.data.maps import KeyframeMap
from sdpr_loc.data.synth import make_world, render_drive
from sdpr_loc.evaluation.localize import FrameResult
from sdpr_loc.evaluation.report import summarize
from sdpr_loc.vision.frontend import default_model_path


@pytest.fixture(scope="module")
def teach_bag(tmp_path_factory):
    path = tmp_path_factory.mktemp("bags") / "teach.mcap"
    write_stereo_bag(path, render_drive(make_world(7), "teach", "day", frames=14, seed=0))
    return path


def _rows(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_build_map_and_eval_ground_truth_perfect_case(teach_bag, tmp_path):
    """repeat == teach, same lighting: every method localizes with near-zero error."""
    model = str(default_model_path())
    map_path = tmp_path / "map.npz"
    assert cli(["build-map", "--teach", str(teach_bag), "--model", model, "--out", str(map_path),
                "--device", "cpu", "--every-m", "0.01"]) == 0
    out = tmp_path / "eval"
    methods = ["learned-certified", "learned-svd", "learned-keypoints", "orb-ransac"]
    assert cli(["eval", "--map", str(map_path), "--repeat", str(teach_bag), "--teach", str(teach_bag),
                "--model", model, "--out", str(out), "--device", "cpu", "--methods", ",".join(methods)]) == 0
    rows = {r["method"]: r for r in _rows(out / "eval.csv")}
    assert set(rows) == set(methods)
    for name, r in rows.items():
        assert 0.0 <= float(r["certified_rate"]) <= 1.0
        assert float(r["localized_rate"]) >= 0.8, (name, r)
        assert float(r["median_trans_m"]) < 0.05 and float(r["median_rot_deg"]) < 0.5, (name, r)
    assert float(rows["learned-certified"]["certified_of_localized"]) == 1.0
    assert float(rows["learned-svd"]["certified_rate"]) == 0.0  # the baseline never claims a certificate
    frames = _rows(out / "eval_frames.csv")
    assert len(frames) == len(methods) * 14
    assert all(math.isfinite(float(f["trans_err_m"])) for f in frames if f["localized"] == "1")
    # integrity: localized means published (never a FAIL pose); NEES of every trusted pose
    assert all(f["integrity"] in ("OK", "WARN", "FAIL") for f in frames)
    # how each pose's matches were found: dense search for the learned dense methods, descriptor
    # nearest neighbours for the keypoint ones (the first frame has no prior: exhaustive)
    searched = {f["method"]: set() for f in frames}
    for f in frames:
        if f["localized"] == "1":
            searched[f["method"]].add(f["search"])
    assert searched["orb-ransac"] == searched["learned-keypoints"] == {"keypoints"}
    assert "exhaustive" in searched["learned-certified"] and searched["learned-certified"] <= {"guided", "exhaustive"}
    assert not any(f["localized"] == "1" and f["integrity"] == "FAIL" for f in frames)
    cert = [f for f in frames if f["method"] == "learned-certified" and f["localized"] == "1"]
    assert cert and all(float(f["nees"]) >= 0 for f in cert)
    assert int(rows["learned-certified"]["published_over_1m"]) == 0
    assert float(rows["learned-certified"]["mean_nees"]) == pytest.approx(np.mean([float(f["nees"]) for f in cert]))
    assert (out / "eval.png").stat().st_size > 10_000
    assert (out / "eval_integrity.png").stat().st_size > 10_000


def test_eval_rejects_unknown_method_and_missing_orb_map(teach_bag, tmp_path, capsys):
    map_path = tmp_path / "orb.npz"
    assert cli(["build-map", "--teach", str(teach_bag), "--frontend", "orb", "--out", str(map_path)]) == 0
    capsys.readouterr()
    assert cli(["eval", "--map", str(map_path), "--repeat", str(teach_bag), "--methods", "magic"]) == 2
    assert "sdpr-loc eval: error: unknown method 'magic'" in capsys.readouterr().err
    # an ORB map cannot serve the learned methods: their descriptors differ
    assert cli(["eval", "--map", str(map_path), "--repeat", str(teach_bag), "--methods", "learned-svd",
                "--model", str(default_model_path()), "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert "descriptors" in err and str(map_path) in err
    net_map = dataclasses.replace(KeyframeMap.load(map_path), frontend="network").save(tmp_path / "net.npz")
    assert cli(["eval", "--map", str(net_map), "--repeat", str(teach_bag), "--methods", "orb-ransac"]) == 2
    assert capsys.readouterr().err == ("sdpr-loc eval: error: orb-ransac needs an ORB map: pass --teach "
                                       "(to build one) or --orb-map\n")


def test_summary_counts_unlocalized_frames_as_failures():
    T = np.eye(4)
    off = np.eye(4)
    off[0, 3] = 0.1
    res = [FrameResult(0, T, T, True, True, 50, 1.0, ""),
           FrameResult(1, T, off, True, True, 50, 1.0, ""),
           FrameResult(2, T, None, False, False, 0, 1.0, "lost")]
    s = summarize("m", res)
    assert s["success_rate"] == pytest.approx(2 / 3) and s["localized_rate"] == pytest.approx(2 / 3)
    assert s["median_trans_m"] == pytest.approx(0.05) and s["certified_of_localized"] == 1.0


def test_map_from_odometry_localizes_through_its_keyframes(teach_bag, tmp_path):
    """build-map --poses odometry uses no ground truth: its frame is the first camera's. eval, with
    the teach bag, measures each pose through the keyframe it was localized against (anchors), so
    the teach drive replayed against its own odometry map is localized almost exactly."""
    from sdpr_loc.data.bags import StereoBag
    from sdpr_loc.evaluation.localize import keyframe_anchors

    map_path = tmp_path / "odo.npz"
    assert cli(["build-map", "--teach", str(teach_bag), "--poses", "odometry", "--out", str(map_path),
                "--device", "cpu"]) == 0
    kmap = KeyframeMap.load(map_path)
    assert len(kmap) >= 2 and kmap.frontend == "network"
    assert np.allclose(kmap.poses[0], np.eye(4))                          # the odometry origin
    with StereoBag(teach_bag) as bag:
        idx = bag.index()
    A = keyframe_anchors(kmap, idx.stamps, idx.poses)
    assert np.allclose(A[0], idx.poses[0], atol=1e-9)                     # first keyframe = first frame
    out = tmp_path / "eval"
    assert cli(["eval", "--map", str(map_path), "--repeat", str(teach_bag), "--teach", str(teach_bag),
                "--out", str(out), "--device", "cpu", "--methods", "learned-certified"]) == 0
    row = _rows(out / "eval.csv")[0]
    # a frame that is itself a keyframe is found exactly through its anchor; the frames between
    # keyframes carry the dense matcher's motion shrink (see models/README.md), hence 0.8
    frames = {int(r["stamp_ns"]): r for r in _rows(out / "eval_frames.csv")}
    assert all(float(frames[int(s)]["trans_err_m"]) < 0.01 for s in kmap.stamps)
    assert float(row["success_ungated"]) >= 0.8 and float(row["median_trans_m"]) < 0.1
    with pytest.raises(ValueError, match="not frames of the teach drive"):
        keyframe_anchors(kmap, idx.stamps[1:], idx.poses[1:])


def test_summary_integrity_columns():
    """A withheld (FAIL) pose is not localized but counts for the ungated success; NEES averages
    over published poses only."""
    T = np.eye(4)
    far = np.eye(4)
    far[0, 3] = 3.0
    res = [FrameResult(0, T, T, True, True, 50, 1.0, "", integrity="OK", nees=4.0),
           FrameResult(1, T, T, False, True, 50, 1.0, "", integrity="FAIL", nees=100.0),
           FrameResult(2, T, far, True, True, 50, 1.0, "", integrity="WARN", nees=8.0)]
    s = summarize("m", res)
    assert s["published_over_1m"] == 1 and s["mean_nees"] == pytest.approx(6.0)
    assert s["success_rate"] == pytest.approx(1 / 3) and s["success_ungated"] == pytest.approx(2 / 3)
    assert s["published_missed"] == pytest.approx(0.5)
