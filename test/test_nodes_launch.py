"""launch/*.launch.py and the pip bringup (`sdpr-loc launch`) start the same nodes, executables and
parameters: both read sdpr_loc.nodes.bringup. Checked statically here (launch and launch_ros are
not installable from pip); with ROS 2 installed, the real launch files are also run."""
import ast
import importlib
import importlib.util
import io
import sys
import time
import types
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from sdpr_loc.nodes import bringup

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILES = {"localize": ROOT / "launch" / "localize.launch.py", "train": ROOT / "launch" / "train.launch.py",
                "keypoints": ROOT / "launch" / "localize_keypoints.launch.py"}
CASES = {"localize": [{}, {"map": "/maps/teach.npz", "use_gpu": "false", "params_file": "/tmp/robot.yaml"},
                      {"frontend": "network", "model": "/m.pt", "namespace": "rover",
                       "publish_uncertified": "true"},
                      {"mode": "teach", "save_map": "/maps/new.npz", "autostart": "false"}],
         "keypoints": [{}, {"map": "/maps/teach.npz", "use_gpu": "false", "params_file": "/tmp/robot.yaml"},
                       {"frontend": "network", "model": "/m.pt", "namespace": "rover",
                        "publish_uncertified": "true", "autostart": "false"}],
         "train": [{}, {"teach": "a.mcap,b.mcap", "repeat": "c.mcap,d.mcap", "epochs": "3", "autostart": "false"}]}


class _Recorder:
    """Stand-ins for the launch API: record what the launch file builds."""

    def __init__(self):
        self.nodes = []

    def modules(self, values):
        rec = self
        launch = types.ModuleType("launch")
        actions = types.ModuleType("launch.actions")
        subs = types.ModuleType("launch.substitutions")
        lros = types.ModuleType("launch_ros")
        lros_actions = types.ModuleType("launch_ros.actions")

        class LaunchDescription(list):
            pass

        class DeclareLaunchArgument:
            def __init__(self, name, default_value=None, description=None):
                self.name, self.default_value, self.description = name, default_value, description

        class OpaqueFunction:
            def __init__(self, function):
                self.function = function

        class LaunchConfiguration:
            def __init__(self, name):
                self.name = name

            def perform(self, context):
                return context[self.name]

        class Node:
            def __init__(self, **kw):
                rec.nodes.append(kw)

        launch.LaunchDescription = LaunchDescription
        actions.DeclareLaunchArgument, actions.OpaqueFunction = DeclareLaunchArgument, OpaqueFunction
        subs.LaunchConfiguration = LaunchConfiguration
        lros_actions.Node = Node
        launch.actions, launch.substitutions, lros.actions = actions, subs, lros_actions
        return {"launch": launch, "launch.actions": actions, "launch.substitutions": subs,
                "launch_ros": lros, "launch_ros.actions": lros_actions}


def _run_launch_file(path, values, monkeypatch):
    rec = _Recorder()
    for name, mod in rec.modules(values).items():
        monkeypatch.setitem(sys.modules, name, mod)
    spec = importlib.util.spec_from_file_location(f"_lf_{path.stem.replace('.', '_')}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ld = mod.generate_launch_description()
    declared = {a.name: a.default_value for a in ld if hasattr(a, "default_value")}
    context = {**declared, **values}
    for action in ld:
        if hasattr(action, "function"):
            action.function(context)
    return declared, rec.nodes


@pytest.mark.parametrize("launch", sorted(LAUNCH_FILES))
def test_launch_file_and_bringup_agree(launch, monkeypatch):
    for values in CASES[launch]:
        declared, nodes = _run_launch_file(LAUNCH_FILES[launch], values, monkeypatch)
        assert declared == {a.name: a.default for a in bringup.arguments(launch)}
        plan = bringup.plan(launch, values)
        assert len(nodes) == len(plan) >= 1
        for kw, n in zip(nodes, plan):
            assert kw["package"] == "sdpr_loc"
            assert kw["executable"] == n.entry.executable and kw["name"] == n.entry.name
            assert kw["parameters"] == n.parameters()
            assert (kw["namespace"] or "") == n.namespace
            # and the pip command runs the same main() with the same files and overrides
            cmd = n.command()
            assert cmd[1:3] == ["-m", n.entry.module] and f"__node:={n.entry.name}" in cmd
            for f in n.params_files:
                assert cmd[cmd.index(f) - 1] == "--params-file"
            assert sum(c == "-p" for c in cmd) == len(n.overrides)


def test_launch_arguments_map_to_declared_parameters():
    from sdpr_loc.nodes.params import SPECS, TRAIN_FILE, config_path, load_defaults

    train_params = set(load_defaults("trainer_node", config_path(TRAIN_FILE)))
    full = {"localize": CASES["localize"][1] | CASES["localize"][2], "train": CASES["train"][1],
            "keypoints": CASES["keypoints"][1] | CASES["keypoints"][2]}
    for launch, values in full.items():
        for n in bringup.plan(launch, values):
            known = {s.name for s in SPECS[n.entry.name]}
            if n.entry.name == "trainer_node":
                known |= train_params
            assert set(n.overrides) <= known, (n.entry.name, set(n.overrides) - known)
            for f in n.params_files[: len(n.entry.configs)]:
                assert Path(f).is_file()
    p = {n.entry.name: n for n in bringup.plan("localize", {"map": "/m.npz", "use_gpu": "false"})}
    assert p["localization_node"].overrides == {"mode": "map", "map_path": "/m.npz", "device": "cpu"}
    p = {n.entry.name: n for n in bringup.plan("keypoints", {"map": "/m.npz", "use_gpu": "false"})}
    assert p["registration_node"].overrides == {"mode": "map", "map_path": "/m.npz"}
    assert p["keypoint_node"].overrides == {"device": "cpu"}
    # autostart:=false reaches every lifecycle node; the default leaves the params file's (true)
    for launch in ("localize", "keypoints"):
        assert all(n.overrides.get("autostart") is False for n in bringup.plan(launch, {"autostart": "false"}))
        assert all("autostart" not in n.overrides for n in bringup.plan(launch, {}))
    with pytest.raises(ValueError, match="unknown launch arguments"):
        bringup.plan("localize", {"mpa": "x"})
    with pytest.raises(ValueError, match="true or false"):
        bringup.plan("localize", {"use_gpu": "maybe"})


def test_console_scripts_match_the_node_table():
    tree = ast.parse((ROOT / "setup.py").read_text())
    scripts = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for k, v in zip(node.keys, node.values):
                if isinstance(k, ast.Constant) and k.value == "console_scripts":
                    for item in v.elts:
                        name, target = (s.strip() for s in item.value.split("="))
                        scripts[name] = target
    for entry in bringup.NODES.values():
        assert scripts.get(entry.executable) == f"{entry.module}:main"
        assert callable(importlib.import_module(entry.module).main)
    assert "script_dir=$base/lib/sdpr_loc" in (ROOT / "setup.cfg").read_text()


def test_pip_bringup_dry_run_prints_the_plan():
    from sdpr_loc.cli import main

    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main(["launch", "localize", "map:=/m.npz", "--dry-run"]) == 0
    lines = buf.getvalue().strip().splitlines()
    assert len(lines) == 1
    assert "sdpr_loc.nodes.localization_node" in lines[0] and "map_path:=/m.npz" in lines[0]
    with redirect_stdout(io.StringIO()):
        assert main(["launch", "localize", "bogus:=1"]) == 2


def test_real_launch_files_start_the_nodes():
    pytest.importorskip("launch_ros", reason="launch/launch_ros are not installable from pip; this part "
                                             "runs where ROS 2 is installed (colcon build, sourced)")
    import launch
    import rclpy

    ld = importlib.util.spec_from_file_location("lf", LAUNCH_FILES["localize"])
    mod = importlib.util.module_from_spec(ld)
    ld.loader.exec_module(mod)
    ls = launch.LaunchService()
    ls.include_launch_description(mod.generate_launch_description())
    import threading

    th = threading.Thread(target=ls.run, daemon=True)
    th.start()
    rclpy.init()
    try:
        node = rclpy.create_node("launch_probe")
        deadline = time.monotonic() + 30
        names = set()
        while time.monotonic() < deadline and "localization_node" not in names:
            names = set(node.get_node_names())
            time.sleep(0.5)
        assert "localization_node" in names
    finally:
        ls.shutdown()
        th.join(20)
        rclpy.try_shutdown()


def test_bringup_is_light():
    """Launch files import the node table first: it must not drag in torch, rclpy or numpy."""
    import subprocess

    code = ("import sys, sdpr_loc.nodes.bringup as b; b.plan('localize', {}); "
            "heavy = {'torch', 'rclpy', 'numpy', 'cv2'} & set(sys.modules); assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)
