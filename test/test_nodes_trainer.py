"""trainer_node: Trigger services start/stop a worker-thread run, progress is published, bad
requests are refused with a reason, and the node stays responsive while training runs."""
import threading
import time

import pytest

pytestmark = pytest.mark.ros
rclpy = pytest.importorskip("rclpy")


def _fake_trainer(log):
    """Stand-in for the project trainer: steps until asked to stop, writes output atomically."""
    def train(job, progress, should_stop):
        log.append(job)
        for step in range(1, 400):
            progress({"epoch": 0, "step": step, "total_steps": 400, "loss": 1.0 / step})
            if should_stop() or (job.get("params", {}).get("epochs") == 1 and step == 5):
                break
            time.sleep(0.01)
        out = job["output"]
        import os
        with open(out + ".tmp", "w") as fh:
            fh.write("weights")
        os.replace(out + ".tmp", out)
        return out
    return train


@pytest.fixture
def rig(tmp_path):
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter

    from sdpr_loc.nodes.trainer_node import TrainerNode

    teach, repeat = tmp_path / "day.mcap", tmp_path / "night.mcap"
    teach.write_bytes(b"")
    repeat.write_bytes(b"")
    rclpy.init()
    log = []
    node = TrainerNode(train_fn=_fake_trainer(log), parameter_overrides=[
        Parameter("teach_bags", value=[str(teach)]), Parameter("repeat_bags", value=[str(repeat)]),
        Parameter("output", value=str(tmp_path / "out.pt")), Parameter("progress_period", value=0.1)])
    client = rclpy.create_node("trainer_client")
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    ex.add_node(client)
    th = threading.Thread(target=ex.spin, daemon=True)
    th.start()
    yield node, client, log, tmp_path
    ex.shutdown(timeout_sec=2)
    th.join(timeout=5)     # the spin thread must be out of its wait before the context goes
    node.close()
    node.destroy_node()
    client.destroy_node()
    rclpy.try_shutdown()


def _call(client, name):
    from std_srvs.srv import Trigger

    cli = client.create_client(Trigger, f"/trainer_node/{name}")
    assert cli.wait_for_service(timeout_sec=5)
    fut = cli.call_async(Trigger.Request())
    deadline = time.monotonic() + 5
    while not fut.done() and time.monotonic() < deadline:
        time.sleep(0.01)
    return fut.result()


def test_start_progress_stop(rig):
    from diagnostic_msgs.msg import DiagnosticArray

    node, client, log, tmp = rig
    states = []
    client.create_subscription(DiagnosticArray, "/trainer_node/progress",
                               lambda m: states.append({kv.key: kv.value for kv in m.status[0].values}), 10)
    r = _call(client, "start")
    assert r.success, r.message
    assert not _call(client, "start").success                  # one run at a time
    deadline = time.monotonic() + 5
    while not any(s.get("state") == "running" and int(s.get("step", 0)) > 0 for s in states):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # parameters cannot change under a running job
    from rclpy.parameter import Parameter

    assert not node.set_parameters([Parameter("output", value="x.pt")])[0].successful
    assert _call(client, "stop").success
    deadline = time.monotonic() + 5
    while node.running:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert node.status["state"] == "stopped"
    assert (tmp / "out.pt").read_text() == "weights"
    job = log[0]
    assert job["teach"] == [str(tmp / "day.mcap")] and job["params"]["progress"] is False
    assert "lr" in job["params"] and "epochs" in job["params"]      # the training config came along
    assert not _call(client, "stop").success                         # nothing to stop


def test_bad_requests_are_refused_with_a_reason(rig):
    from rclpy.parameter import Parameter

    node, client, log, tmp = rig
    assert node.set_parameters([Parameter("repeat_bags", value=[str(tmp / "missing.mcap")])])[0].successful
    r = _call(client, "start")
    assert not r.success and "not found" in r.message
    assert node.status["state"] == "failed"
    r = node.set_parameters([Parameter("lr", value=-1.0)])[0]           # checked by the training config
    assert not r.successful and "lr" in r.reason
    r = node.set_parameters([Parameter("epochs", value=0)])[0]
    assert not r.successful
    assert node.set_parameters([Parameter("repeat_bags", value=[""])])[0].successful
    r = _call(client, "start")
    assert not r.success and "one repeat bag per teach bag" in r.message
    assert log == []


def test_finishes_on_its_own(rig):
    from rclpy.parameter import Parameter

    node, client, log, tmp = rig
    assert node.set_parameters([Parameter("epochs", value=1)])[0].successful
    assert _call(client, "start").success
    deadline = time.monotonic() + 5
    while node.running:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert node.status["state"] == "done" and node.status["output"].endswith("out.pt")


@pytest.mark.slow
def test_project_trainer_adapter_and_network_frontend(tmp_path):
    """The real trainer on two tiny bags, then the keypoint node's network front end loads its output."""
    import numpy as np

    from sdpr_loc.data.bags import write_stereo_bag
    from sdpr_loc.vision.frontend import make_extractor
    from sdpr_loc.nodes.params import config_path, load_defaults
    from sdpr_loc.data.room import StereoRoom, room_drive_poses
    from sdpr_loc.data.synth import default_camera
    from sdpr_loc.nodes.trainer_node import project_train

    room, cam = StereoRoom(seed=9), default_camera(96, 128, fx=64.0)
    write_stereo_bag(tmp_path / "day.mcap", room.frames(8, cam))
    write_stereo_bag(tmp_path / "night.mcap", room.frames(8, cam, poses=room_drive_poses(8, lateral=0.2), gain=0.6))
    params = load_defaults("trainer_node", config_path("train.yaml"))
    params.update(epochs=1, batch_size=4, progress=False, tensorboard=False, val_fraction=0.0, warmup_steps=1)
    steps = []
    out = project_train({"teach": [str(tmp_path / "day.mcap")], "repeat": [str(tmp_path / "night.mcap")],
                         "params": params, "output": str(tmp_path / "model" / "out.pt"),
                         "run_dir": str(tmp_path / "run"), "device": "cpu"}, steps.append, lambda: False)
    assert steps and all(np.isfinite(s["loss"]) for s in steps)
    assert (tmp_path / "run" / "last.pt").is_file()
    assert [p.name for p in (tmp_path / "model").iterdir()] == ["out.pt"]      # atomic: no temporaries
    extract, what = make_extractor("network", out, device="cpu", max_disparity=32)
    assert "out.pt" in what
    f = next(room.frames(1, cam))
    kp = extract(f.left, f.right, cam)
    assert kp.points.shape[0] == 1 and kp.descriptors.shape[-1] > 0
    with pytest.raises(ValueError, match="does not exist"):
        make_extractor("network", str(tmp_path / "nope.pt"), device="cpu")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot load model"):
        make_extractor("network", str(tmp_path / "junk.pt"), device="cpu")
