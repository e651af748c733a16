"""Every `sdpr-loc` command reports a user error as one line `sdpr-loc <command>: error: ...` naming
the file, exit status 2, no traceback; bugs keep their traceback; --debug / SDPR_LOC_DEBUG show it.

Most cases call ``sdpr_loc.cli.main`` in-process (the same handler as the console script); a few
run the real command in a subprocess to check what a user sees.
"""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sdpr_loc import cli
from sdpr_loc.data.bags import IMAGE_T, INFO_T, StereoTopics, write_stereo_bag
from sdpr_loc.data.synth import make_world, render_drive

ROOT = Path(__file__).resolve().parents[1]


def _raw_bag(path: Path, topics: list[tuple[str, str]], messages: int = 0) -> Path:
    """A valid rosbag2 directory written with rosbags: these topics, ``messages`` tiny images each."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_KILTED)
    G = ts.types
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        for topic, msgtype in topics:
            conn = w.add_connection(topic, msgtype, typestore=ts)
            for i in range(messages):
                stamp = G["builtin_interfaces/msg/Time"](sec=1 + i, nanosec=0)
                msg = G[IMAGE_T](header=G["std_msgs/msg/Header"](stamp=stamp, frame_id="cam"), height=2,
                                 width=2, encoding="mono8", is_bigendian=0, step=2, data=np.zeros(4, np.uint8))
                w.write(conn, (1 + i) * 1_000_000_000, ts.serialize_cdr(msg, IMAGE_T))
    return path


@pytest.fixture(scope="module")
def f(tmp_path_factory) -> dict[str, Path]:
    """Good, corrupt, empty and wrong-topic bags; corrupt and incomplete maps; a corrupt model."""
    d = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    files = {"good": d / "good.mcap", "missing_bag": d / "missing.mcap", "missing_map": d / "missing.npz",
             "missing_model": d / "missing.pt", "corrupt_mcap": d / "corrupt.mcap",
             "corrupt_dir": d / "corrupt_bag", "corrupt_npz": d / "corrupt.npz", "nokeys_npz": d / "nokeys.npz",
             "corrupt_pt": d / "corrupt.pt", "orb_map": d / "orb.npz"}
    write_stereo_bag(files["good"], render_drive(make_world(7), "teach", "day", frames=3, seed=0))
    files["corrupt_mcap"].write_bytes(rng.bytes(4096))
    files["corrupt_dir"].mkdir()
    (files["corrupt_dir"] / "metadata.yaml").write_bytes(rng.bytes(300))
    (files["corrupt_dir"] / "corrupt_bag_0.mcap").write_bytes(rng.bytes(2048))
    tp = StereoTopics()
    files["empty"] = _raw_bag(d / "empty_bag", [(tp.left, IMAGE_T), (tp.right, IMAGE_T),
                                                (tp.left_info, INFO_T), (tp.right_info, INFO_T)])
    files["wrong_topic"] = _raw_bag(d / "wrong_topic_bag", [("/camera/image", IMAGE_T)], messages=2)
    files["corrupt_npz"].write_bytes(rng.bytes(1000))
    np.savez(files["nokeys_npz"], format_version=np.array(1), poses=np.zeros((0, 4, 4)))
    files["corrupt_pt"].write_bytes(rng.bytes(1000))
    assert cli.main(["build-map", "--teach", str(files["good"]), "--frontend", "orb", "--every-m", "0.01",
                     "--out", str(files["orb_map"])]) == 0
    # a map without a front-end tag (as older versions wrote) passes the map check of every method
    from sdpr_loc.data.maps import KeyframeMap

    files["untagged_map"] = dataclasses.replace(KeyframeMap.load(files["orb_map"]), frontend="unknown").save(
        d / "untagged.npz")
    return files


def _one_line(err: str, command: str, *names: str) -> str:
    lines = err.strip().splitlines()
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    assert lines[0].startswith(f"sdpr-loc {command}: error: "), lines[0]
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


# (command, arguments with {key} for a fixture file, file key the message must name, words it must say)
CASES = [
    ("build-map", ["--teach", "{missing_bag}", "--frontend", "orb"], "missing_bag", "does not exist"),
    ("build-map", ["--teach", "{corrupt_mcap}", "--frontend", "orb"], "corrupt_mcap", "File magic is invalid"),
    ("build-map", ["--teach", "{corrupt_dir}", "--frontend", "orb"], "corrupt_dir", "cannot read bag"),
    ("build-map", ["--teach", "{empty}", "--frontend", "orb"], "empty", "no stereo frames"),
    ("build-map", ["--teach", "{wrong_topic}", "--frontend", "orb"], "wrong_topic", "/stereo/left/image_rect"),
    ("build-map", ["--teach", "{good}", "--model", "{corrupt_pt}"], "corrupt_pt", "not a zip archive"),
    ("build-map", ["--teach", "{good}", "--model", "{missing_model}"], "missing_model", "does not exist"),
    ("build-map", ["--teach", "{good}", "--device", "tpu"], None, "device must be"),
    ("eval", ["--map", "{missing_map}", "--repeat", "{missing_bag}"], "missing_map", "does not exist"),
    ("eval", ["--map", "{corrupt_npz}", "--repeat", "{good}"], "corrupt_npz", "not an .npz archive"),
    ("eval", ["--map", "{nokeys_npz}", "--repeat", "{good}"], "nokeys_npz", "lacks arrays"),
    ("eval", ["--map", "{orb_map}", "--repeat", "{good}", "--methods", "learned-svd"], "orb_map", "descriptors"),
    ("eval", ["--map", "{orb_map}", "--repeat", "{empty}", "--methods", "orb-ransac"], "empty", "no stereo frames"),
    ("eval", ["--map", "{orb_map}", "--repeat", "{corrupt_mcap}", "--methods", "orb-ransac"], "corrupt_mcap",
     "cannot read bag"),
    ("eval", ["--map", "{orb_map}", "--repeat", "{wrong_topic}", "--methods", "orb-ransac"], "wrong_topic",
     "no topic"),
    ("eval", ["--map", "{orb_map}", "--repeat", "{good}", "--methods", "magic"], None, "unknown method"),
    ("eval", ["--map", "{orb_map}", "--repeat", "{good}", "--methods", "orb-ransac", "--orb-map",
              "{corrupt_npz}"], "corrupt_npz", "not an .npz archive"),
    ("eval", ["--map", "{untagged_map}", "--repeat", "{good}", "--methods", "learned-certified", "--model",
              "{corrupt_pt}"], "corrupt_pt", "cannot load model"),
    ("train", ["--teach", "{missing_bag}", "--repeat", "{good}"], "missing_bag", "does not exist"),
    ("train", ["--teach", "{good}", "--repeat", "{corrupt_mcap}"], "corrupt_mcap", "cannot read bag"),
    ("train", ["--teach", "{empty}", "--repeat", "{good}"], "empty", "no stereo frames"),
    ("train", ["--teach", "{good}", "--repeat", "{wrong_topic}"], "wrong_topic", "no topic"),
    ("train", ["--teach", "{good}", "--repeat", "{good}", "--init-from", "{corrupt_pt}"], "corrupt_pt",
     "cannot read checkpoint"),
    ("train", ["--teach", "{good}", "--repeat", "{good}", "--config", "{missing_map}"], "missing_map",
     "cannot read training config"),
    ("train", ["--teach", "{good}", "--repeat", "{good}", "--set", "bogus=1"], None, "unknown training parameter"),
    ("train", ["--teach", "{good}", "{good}", "--repeat", "{good}"], None, "one --repeat bag per --teach bag"),
    ("play", ["{missing_bag}"], "missing_bag", "does not exist"),
    ("play", ["{corrupt_mcap}"], "corrupt_mcap", "File magic is invalid"),
    ("play", ["{corrupt_dir}"], "corrupt_dir", "cannot read bag"),
    ("play", ["{empty}"], "empty", "no messages"),
    ("play", ["{good}", "--topics", "/nope"], "good", "no topics to play"),
    ("launch", ["localize", "map:={missing_map}"], "missing_map", "does not exist"),
    ("launch", ["localize", "map:={corrupt_npz}"], "corrupt_npz", "not an .npz archive"),
    ("launch", ["localize", "map:={nokeys_npz}"], "nokeys_npz", "lacks arrays"),
    ("launch", ["localize", "frontend:=network", "model:={corrupt_pt}"], "corrupt_pt", "cannot load model"),
    ("launch", ["localize", "params_file:={missing_map}"], "missing_map", "No such file"),
    ("launch", ["localize", "params_file:={corrupt_pt}"], "corrupt_pt", "is not YAML"),
    ("launch", ["train", "teach:={empty}", "repeat:={good}"], "empty", "no stereo frames"),
    ("launch", ["train", "teach:={good}", "repeat:={corrupt_mcap}"], "corrupt_mcap", "cannot read bag"),
    ("launch", ["train", "teach:={wrong_topic}", "repeat:={good}"], "wrong_topic", "no topic"),
    ("launch", ["localize", "bogus:=1"], None, "unknown launch arguments"),
    ("launch", ["localize", "frontend:=sift"], None, "frontend must be one of"),
    ("demo", ["--model", "{corrupt_pt}"], "corrupt_pt", "cannot load model"),
    ("demo", ["--model", "{missing_model}"], "missing_model", "does not exist"),
    ("make-bag", ["--out", "{good}", "--frames", "1"], "good", "exists"),
    ("polymin-fit", ["--out", "{good}/plot.png"], "good", "File exists"),
    ("make-bag", ["--out", "{missing_bag}", "--storage", "sqlite3", "--frames", "1", "--no-progress"],
     "missing_bag", "storage"),
]


@pytest.mark.parametrize("command,args,names,says", CASES,
                         ids=[f"{c}-{i}" for i, (c, *_) in enumerate(CASES)])
def test_user_errors_are_one_line_with_exit_2(f, tmp_path, capsys, command, args, names, says):
    argv = [command, *(a.format(**{k: str(v) for k, v in f.items()}) for a in args)]
    if command in ("build-map", "train", "eval", "demo"):  # outputs into this test's folder
        argv += ["--out", str(tmp_path / "out")]
    capsys.readouterr()
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    _one_line(err, command, *([f[names].name] if names else []), says)


@pytest.mark.parametrize("command,args,option,says", [
    ("demo", ["--world", "-1"], "--world", "zero or more"), ("make-bag", ["--out", "x.mcap", "--seed", "-2"], "--seed", "zero or more"),
    ("demo", ["--frames", "0"], "--frames", "positive"), ("demo", ["--rate", "nan"], "--rate", "positive"),
    ("demo", ["--every-m", "-1"], "--every-m", "positive"), ("build-map", ["--every-deg", "0"], "--every-deg", "positive"),
    ("eval", ["--features", "0"], "--features", "positive"), ("train", ["--max-steps", "-5"], "--max-steps", "positive"),
    ("stereo-cal", ["--sigma", "-0.5"], "--sigma", "zero or more"), ("stereo-cal", ["--poses", "0"], "--poses", "positive"),
    ("play", ["--delay", "-1", "x.mcap"], "--delay", "zero or more"), ("play", ["--rate", "0", "x.mcap"], "--rate", "positive"),
    ("record", ["-o", "x", "--duration", "-1"], "--duration", "zero or more"),
    ("lifecycle", ["localization_node", "--timeout", "0"], "--timeout", "positive"),
    ("import-kitti", ["k", "--out", "x.mcap", "--scale", "1.5"], "--scale", "in (0, 1]"),
])
def test_numbers_out_of_range_are_usage_errors_naming_the_option(capsys, command, args, option, says):
    """A negative seed, zero frames, a negative keyframe spacing or noise level: refused before
    anything runs (these ran silently, or ended in a numpy traceback)."""
    with pytest.raises(SystemExit) as exc:
        cli.main([command, *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(f"sdpr-loc {command}: error: argument {option}: must be {says}")


@pytest.mark.parametrize("command,args", [
    ("eval", ["--map"]), ("play", ["--rate", "fast", "x.mcap"]), ("polymin-fit", ["--steps", "many"]),
    ("make-bag", ["--out", "x.mcap", "--fx", "-1"]), ("demo", ["--teach", "noon"]),
    ("record", ["--storage", "zip", "-o", "x"]), ("launch", ["nowhere"]), ("train", ["--teach"]), ("build-map", []),
])
def test_bad_arguments_exit_2_with_usage(capsys, command, args):
    """argparse's own report (usage + one error line), exit 2, for every command."""
    with pytest.raises(SystemExit) as exc:
        cli.main([command, *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("usage: sdpr-loc ")
    assert err.strip().splitlines()[-1].startswith(f"sdpr-loc {command}: error: ")


@pytest.mark.parametrize("command,args", [
    ("build-map", ["--teach", "{good}", "--out", "{blocker}/map.npz"]),
    ("eval", ["--odometry", "{good}", "--out", "{blocker}/eval"]),
    ("stereo-cal", ["--out", "{blocker}/cal"]),
])
def test_an_unusable_output_fails_before_the_work(f, tmp_path, capsys, monkeypatch, command, args):
    """An --out that cannot be written (here under a regular file) is one line before anything
    runs: build-map and eval used to fail only after building the map / evaluating every frame."""
    import sdpr_loc.evaluation.build_map_cli as build_map_cli
    import sdpr_loc.evaluation.odometry as odometry
    import sdpr_loc.examples.stereo_cal as stereo_cal

    def work(*a, **kw):
        raise AssertionError("the work ran before the output was checked")

    for module, name in ((build_map_cli, "build"), (odometry, "run_odometry"), (stereo_cal, "make_problem")):
        monkeypatch.setattr(module, name, work)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    argv = [command, *(a.format(good=f["good"], blocker=blocker) for a in args)]
    assert cli.main(argv) == 2
    _one_line(capsys.readouterr().err, command, "blocker")


def test_ctrl_c_is_one_line_with_exit_130(capsys):
    def interrupted():
        raise KeyboardInterrupt

    assert cli.run_command("build-map", interrupted) == 130
    err = capsys.readouterr().err
    assert err == "sdpr-loc build-map: interrupted\n"


def test_a_bug_keeps_its_traceback_and_debug_shows_user_error_tracebacks(capsys, monkeypatch):
    def bug():
        raise RuntimeError("internal inconsistency")

    with pytest.raises(RuntimeError, match="internal inconsistency"):
        cli.run_command("eval", bug)
    with pytest.raises(RuntimeError):
        cli.run_command("eval", bug, debug=True)
    assert capsys.readouterr().err == ""  # bugs are not reworded into a user error line

    from sdpr_loc.data.maps import MapError

    def user_error():
        raise MapError("map file 'm.npz' does not exist")

    assert cli.run_command("eval", user_error) == 2
    assert capsys.readouterr().err == "sdpr-loc eval: error: map file 'm.npz' does not exist\n"
    assert cli.run_command("eval", user_error, debug=True) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "raise MapError" in err
    assert err.splitlines()[-1] == "sdpr-loc eval: error: map file 'm.npz' does not exist"
    # the environment variable turns --debug on for the whole command line
    monkeypatch.setenv("SDPR_LOC_DEBUG", "1")
    assert cli.main(["eval", "--map", "m.npz", "--repeat", "r.mcap"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.splitlines()[-1].startswith("sdpr-loc eval: error: map file 'm.npz'")


def test_path_errors_and_exit_messages_are_user_errors(tmp_path, capsys):
    """open() on a missing path, writing into a file as if it were a folder, SystemExit("...")."""
    def missing():
        open(tmp_path / "nope.yaml")

    def exit_message():
        raise SystemExit("sdpr-loc eval: pass --map and --repeat")

    def exit_status():
        raise SystemExit(3)

    assert cli.run_command("train", missing) == 2
    _one_line(capsys.readouterr().err, "train", "No such file or directory", "nope.yaml")
    assert cli.run_command("eval", exit_message) == 2
    assert capsys.readouterr().err == "sdpr-loc eval: error: pass --map and --repeat\n"
    with pytest.raises(SystemExit) as exc:
        cli.run_command("eval", exit_status)
    assert exc.value.code == 3


def _run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**{k: v for k, v in os.environ.items() if k != "SDPR_LOC_DEBUG"}, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "sdpr_loc.cli", *args], capture_output=True, text=True,
                          env=env, timeout=120, cwd=ROOT)


def test_subprocess_what_the_user_sees(f, tmp_path):
    # the example: a missing map
    p = _run("eval", "--map", str(f["missing_map"]), "--repeat", str(f["missing_bag"]))
    assert p.returncode == 2
    _one_line(p.stderr, "eval", f["missing_map"].name, "does not exist")
    # play surfaced rosbags' own ReaderError; now a BagError naming the file, before any node starts
    p = _run("play", str(f["corrupt_mcap"]))
    assert p.returncode == 2
    _one_line(p.stderr, "play", f["corrupt_mcap"].name, "File magic is invalid")
    # record: the output exists (after its own node is created and shut down again)
    p = _run("record", "-o", str(f["good"]), "--duration", "0.1")
    assert p.returncode == 2
    _one_line(p.stderr, "record", f["good"].name, "exists")
    # --debug: the same user error with its traceback, still exit 2
    p = _run("--debug", "build-map", "--teach", str(f["corrupt_mcap"]), "--frontend", "orb",
             "--out", str(tmp_path / "m.npz"))
    assert p.returncode == 2
    assert "Traceback" in p.stderr and "ReaderError" in p.stderr
    assert p.stderr.strip().splitlines()[-1].startswith("sdpr-loc build-map: error: cannot read bag")
