"""Managed nodes over DDS: lifecycle transitions through the standard lifecycle_msgs services
(ChangeState / GetState), a failed configure (bad map) that leaves the node alive and saying why,
the 1 Hz /diagnostics summary (contents and levels), and a short soak: bounded queues, path and
windows, no growth in Python object counts."""
import gc
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

pytestmark = [pytest.mark.ros]
rclpy = pytest.importorskip("rclpy")

from sdpr_loc.data.messages import pose_to_matrix, stamp_to_ns  # noqa: E402
from sdpr_loc.nodes.managed import summary_level  # noqa: E402
from sdpr_loc.data.room import StereoRoom  # noqa: E402
from sdpr_loc.data.synth import default_camera  # noqa: E402

T0 = 1_850_000_000_000_000_000
DT = 100_000_000


def _wait(cond, timeout, what=""):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


class _Lifecycle:
    """ChangeState / GetState clients of one node, called over DDS."""

    def __init__(self, tester, node_name):
        from lifecycle_msgs.srv import ChangeState, GetState

        self.change = tester.create_client(ChangeState, f"/{node_name}/change_state")
        self.get = tester.create_client(GetState, f"/{node_name}/get_state")
        assert self.change.wait_for_service(timeout_sec=60) and self.get.wait_for_service(timeout_sec=60)

    @staticmethod
    def _call(client, request, timeout=60):
        fut = client.call_async(request)
        deadline = time.monotonic() + timeout
        while not fut.done() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert fut.done(), f"no answer from {client.srv_name}"
        return fut.result()

    def state(self) -> str:
        from lifecycle_msgs.srv import GetState

        return self._call(self.get, GetState.Request()).current_state.label

    def transition(self, label: str) -> bool:
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState

        return self._call(self.change, ChangeState.Request(transition=Transition(label=label))).success


@pytest.fixture
def ros():
    from rclpy.executors import SingleThreadedExecutor

    rclpy.init()
    ex = SingleThreadedExecutor()
    nodes = []

    def spin(*new):
        for n in new:
            nodes.append(n)
            ex.add_node(n)

    th = threading.Thread(target=ex.spin, daemon=True)
    tester = rclpy.create_node("lifecycle_tester")
    spin(tester)
    th.start()
    yield tester, spin
    ex.shutdown(timeout_sec=2)
    for n in nodes:
        if hasattr(n, "close"):
            n.close()
        n.destroy_node()
    rclpy.try_shutdown()


@pytest.fixture(scope="module")
def frames():
    cam = default_camera(240, 320, fx=160.0)
    return cam, list(StereoRoom(seed=5).frames(12, cam, start_ns=T0, rate_hz=10))


def _pipeline(**params):
    from rclpy.parameter import Parameter

    from sdpr_loc.nodes.keypoint_node import KeypointNode
    from sdpr_loc.nodes.registration_node import RegistrationNode

    over = [Parameter(k, value=v) for k, v in params.items()]
    return KeypointNode(parameter_overrides=over), RegistrationNode(parameter_overrides=over)


def test_transitions_over_dds_and_deactivate_keeps_state(ros, frames):
    from sdpr_loc.nodes.graph_probe import OutputListener, StereoPublisher

    tester, spin = ros
    cam, fr = frames
    kn, rn = _pipeline(autostart=False)
    spin(kn, rn)
    pub, out = StereoPublisher(tester), OutputListener(tester)
    life = {n: _Lifecycle(tester, n) for n in ("keypoint_node", "registration_node")}
    assert {lc.state() for lc in life.values()} == {"unconfigured"}     # autostart:=false waits
    assert all(lc.transition("configure") for lc in life.values())
    assert {lc.state() for lc in life.values()} == {"inactive"}
    assert rn.tracker is not None and pub.subscribers() == 0           # loaded, not yet listening
    assert not life["registration_node"].transition("configure")       # not a transition of 'inactive'

    assert all(lc.transition("activate") for lc in life.values())
    assert life["keypoint_node"].state() == "active"
    _wait(lambda: pub.subscribers() > 0, 30, "the subscriptions")
    for f in fr[:4]:
        pub.publish_frame(f)
        assert out.wait_for(lambda got: f.stamp_ns in got.certificate, 30)
    assert out.wait_for(lambda got: fr[3].stamp_ns in got.pose, 10)

    # deactivate: images keep arriving, nothing is processed or published, nothing crashes
    assert all(lc.transition("deactivate") for lc in life.values())
    assert life["registration_node"].state() == "inactive"
    done = kn.worker.processed, rn.worker.processed
    n_cert = len(out.got.certificate)
    for f in fr[4:8]:
        pub.publish_frame(f)
        time.sleep(0.1)
    time.sleep(1.0)
    assert len(out.got.certificate) == n_cert and not {f.stamp_ns for f in fr[4:8]} & set(out.got.pose)
    assert (kn.worker.processed, rn.worker.processed) == done
    assert rn.tracker is not None and rn.tracker.keyframe is not None    # state kept

    # re-activate: poses flow again, still in the first frame's odometry (the state was kept)
    assert all(lc.transition("activate") for lc in life.values())
    _wait(lambda: pub.subscribers() > 0, 30, "the subscriptions")
    for f in fr[8:11]:
        pub.publish_frame(f)
        assert out.wait_for(lambda got: f.stamp_ns in got.certificate, 30)
    s = fr[10].stamp_ns
    assert out.wait_for(lambda got: s in got.pose, 10)
    T = pose_to_matrix(out.got.pose[s][1].pose.pose)
    rel_gt = np.linalg.inv(fr[0].pose) @ fr[10].pose
    assert np.linalg.norm(T[:3, 3] - rel_gt[:3, 3]) < 0.1

    # cleanup releases the tracker; shutdown ends in finalized, the process (and executor) go on
    assert life["registration_node"].transition("deactivate")
    assert life["registration_node"].transition("cleanup")
    assert life["registration_node"].state() == "unconfigured" and rn.tracker is None
    assert life["registration_node"].transition("shutdown")
    assert life["registration_node"].state() == "finalized"
    assert life["keypoint_node"].transition("shutdown")
    assert life["keypoint_node"].state() == "finalized"


def test_bad_map_fails_configure_and_the_node_stays_alive(ros, tmp_path):
    """A separate process with autostart (as `sdpr-loc launch` starts it): configure fails with
    the reason logged and on /diagnostics; the node stays in unconfigured, answering GetState."""
    from sdpr_loc.nodes.graph_probe import OutputListener

    tester, _ = ros
    name = f"bad_map_{os.getpid()}"
    out = OutputListener(tester)
    p = subprocess.Popen([sys.executable, "-m", "sdpr_loc.nodes.registration_node", "--ros-args", "-r",
                          f"__node:={name}", "-p", "mode:=map", "-p", f"map_path:={tmp_path / 'nope.npz'}"],
                         env=dict(os.environ, PYTHONUNBUFFERED="1"), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    try:
        life = _Lifecycle(tester, name)

        def summary():
            return [d for d in out.got.diagnostics if d["name"] == f"{name}: registration"]
        assert out.wait_for(lambda got: bool(summary()), 60), "no /diagnostics summary"
        assert life.state() == "unconfigured" and p.poll() is None
        d = summary()[-1]
        assert d["level"] == 2 and "configure failed" in d["message"] and "does not exist" in d["message"]
        assert d["state"] == "unconfigured"
        assert not life.transition("configure")                  # again, over DDS: still fails
        assert life.state() == "unconfigured" and p.poll() is None
    finally:
        p.send_signal(signal.SIGINT)
        try:
            log, _ = p.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            log, _ = p.communicate()
    assert p.returncode == 0, log
    assert "configure failed" in log and "does not exist" in log and "Traceback" not in log


def test_diagnostics_summary_contents_and_levels(ros, frames):
    from sdpr_loc.nodes.graph_probe import OutputListener, StereoPublisher

    tester, spin = ros
    cam, fr = frames
    kn, rn = _pipeline(diagnostics_window_s=2.0)
    spin(kn, rn)
    pub, out = StereoPublisher(tester), OutputListener(tester)
    _wait(lambda: pub.subscribers() > 0, 60, "autostart")

    def summaries(node, since=0):
        return [d for d in out.got.diagnostics[since:] if d["name"] == f"{node}: " +
                {"keypoint_node": "keypoints", "registration_node": "registration"}[node]]

    # active, no input yet: WARN
    assert out.wait_for(lambda got: any(d["level"] == 1 and "no input" in d["message"]
                                        for d in summaries("registration_node")), 30)
    # a stream: OK, with rates, latency percentiles and the camera frame
    ok = None
    for k in range(60):
        f = fr[k % len(fr)]
        pub.publish(f.left, f.right, cam, T0 + k * DT)      # the room loops: odometry re-seeds, fine
        time.sleep(0.2)
        ok = [d for d in summaries("registration_node") if d["level"] == 0 and d["state"] == "active"]
        if ok and k >= 15:
            break
    assert ok, summaries("registration_node")[-3:]
    d = ok[-1]
    assert d["message"] == "running"
    assert float(d["input_hz"]) > 0 and float(d["processed_hz"]) > 0 and float(d["certified_hz"]) > 0
    assert float(d["integrity_ok_hz"]) > 0
    assert 0 < float(d["latency_p50_ms"]) <= float(d["latency_p95_ms"])
    assert int(d["latency_samples"]) > 0 and int(d["queue_drops"]) >= 0
    k = [d for d in summaries("keypoint_node") if d["state"] == "active" and float(d["processed_hz"]) > 0]
    assert k and "certified_hz" not in k[-1] and float(k[-1]["input_hz"]) > 0   # no certificates there
    # the summaries carry the camera frame as hardware_id
    status = []
    from diagnostic_msgs.msg import DiagnosticArray

    tester.create_subscription(DiagnosticArray, "/diagnostics", lambda m: status.extend(m.status), 10)
    _wait(lambda: any(s.name == "registration_node: registration" for s in status), 10, "a summary")
    assert {s.hardware_id for s in status if s.name == "registration_node: registration"} == {
        "stereo_left_optical_frame"}
    # the input stops: WARN within the window (and a few ticks)
    n = len(out.got.diagnostics)
    assert out.wait_for(lambda got: any(d["level"] == 1 and "no input for" in d["message"]
                                        for d in summaries("registration_node", n)), 30)


def test_summary_levels():
    ok = {"input": 10.0, "processed": 10.0, "certified": 9.0, "integrity_ok": 9.0}
    assert summary_level(ok, 5, 0.1, True) == (0, "running")
    assert summary_level(ok, 5, None, True)[0] == 1
    assert summary_level(ok, 5, 6.0, True) == (1, "no input for 6 s")
    assert summary_level({**ok, "processed": 0.0, "certified": 0.0}, 5, 0.1, True)[0] == 2
    lvl, msg = summary_level({**ok, "certified": 0.0, "integrity_ok": 0.0}, 5, 0.1, True)
    assert lvl == 2 and "certification stopped" in msg
    assert summary_level({**ok, "certified": 0.0}, 5, 0.1, False) == (0, "running")  # keypoints: no certificates
    lvl, msg = summary_level({**ok, "processed": 4.0, "certified": 4.0}, 5, 0.1, True)
    assert lvl == 1 and "drops" in msg
    lvl, msg = summary_level({**ok, "certified": 3.0, "integrity_ok": 3.0}, 5, 0.1, True)
    assert lvl == 1 and "30 % of frames certified" in msg
    lvl, msg = summary_level({**ok, "integrity_ok": 1.0}, 5, 0.1, True)
    assert lvl == 1 and "integrity OK" in msg


class _Counter:
    """Counts certificates and poses (a listener that itself keeps no per-frame objects)."""

    def __init__(self, node):
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PoseWithCovarianceStamped

        self.certificates = self.poses = self.last = 0
        node.create_subscription(DiagnosticArray, "certificate", self._cert, 10)
        node.create_subscription(PoseWithCovarianceStamped, "pose", self._pose, 10)

    def _cert(self, msg):
        self.certificates += 1
        self.last = stamp_to_ns(msg.header.stamp)

    def _pose(self, msg):
        self.poses += 1


def _objects() -> int:
    gc.collect()
    return len(gc.get_objects())


def test_short_soak_bounded_queues_and_objects(ros):
    """A few hundred looped frames through the keypoint and registration nodes: queues, path,
    latency window and camera cache stay bounded; Python object counts do not grow."""
    from sdpr_loc.nodes.graph_probe import StereoPublisher
    from sdpr_loc.nodes.managed import LATENCY_SAMPLES

    tester, spin = ros
    cam = default_camera(240, 320, fx=160.0)
    loop = list(StereoRoom(seed=5).frames(10, cam, start_ns=T0, rate_hz=10))
    loop += loop[-2:0:-1]                         # there and back: the stream loops smoothly
    kn, rn = _pipeline(max_path_length=25, diagnostics_window_s=1.0)
    spin(kn, rn)
    pub, count = StereoPublisher(tester), _Counter(tester)
    _wait(lambda: pub.subscribers() > 0, 60, "autostart")

    def run(n, start):
        for k in range(start, start + n):
            f = loop[k % len(loop)]
            s = T0 + k * DT
            pub.publish(f.left, f.right, cam, s)
            deadline = time.monotonic() + 5      # in step with the nodes (a lost frame: go on)
            while count.last < s and time.monotonic() < deadline:
                time.sleep(0.005)

    run(100, 0)                                   # warm-up: caches, lazy imports, DDS
    before = _objects()
    run(200, 100)
    after = _objects()
    print(f"objects {before} -> {after}; certificates {count.certificates}, poses {count.poses}")
    assert count.certificates >= 200 and count.poses >= 150
    assert len(rn.out.path) <= 25 and len(kn.worker.queue) <= 1 and len(rn.worker.queue) <= 1
    assert len(rn.latency_ms) <= LATENCY_SAMPLES and len(rn._history) < 50
    assert len(kn.input._cameras) <= 16
    # a per-frame leak of even one message (several objects each) would add > 200 objects
    assert after - before < 200, (before, after)


def test_lifecycle_command_drives_a_node(ros):
    """`sdpr-loc lifecycle NODE [TRANSITION]` (the pip stand-in for `ros2 lifecycle`): state,
    transitions, a refused transition (exit 1) and a missing node (exit 2, one line)."""
    from rclpy.parameter import Parameter

    from sdpr_loc.nodes.registration_node import RegistrationNode

    tester, spin = ros
    name = f"lc_cli_{os.getpid()}"
    rn = RegistrationNode(parameter_overrides=[Parameter("autostart", value=False)],
                          cli_args=["--ros-args", "-r", f"__node:={name}"])
    spin(rn)

    def cli(*args):
        p = subprocess.run([sys.executable, "-m", "sdpr_loc.cli", "lifecycle", *args], capture_output=True,
                           text=True, timeout=120, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        return p.returncode, p.stdout + p.stderr

    code, out = cli(name)
    assert code == 0 and out.strip().endswith(f"/{name}: unconfigured"), out
    code, out = cli(name, "configure")
    assert code == 0 and "configure succeeded" in out and out.strip().endswith("inactive"), out
    assert rn.lifecycle_state == "inactive" and rn.tracker is not None
    code, out = cli(name, "configure")                         # not a transition of 'inactive'
    assert code == 1 and "FAILED" in out and out.strip().endswith("inactive"), out
    code, out = cli(name, "activate")
    assert code == 0 and rn.lifecycle_state == "active", out
    code, out = cli(f"no_such_node_{os.getpid()}", "--timeout", "2")
    assert code == 2 and "no lifecycle node" in out and "Traceback" not in out, out


def test_a_pipelined_node_prepares_the_next_item_in_its_own_thread(ros):
    """PIPELINED nodes (the localization node): ``prepare`` runs in a front worker thread and its
    result reaches ``_process`` (in the other worker) with the item; an item whose preparation
    fails is reported with the item itself, counted as an error, and the stream goes on."""
    from std_msgs.msg import Header

    from sdpr_loc.nodes.managed import ManagedNode, Prepared

    class Item:
        def __init__(self, value):
            self.value, self.header = value, Header(frame_id="probe")

    class TwoStage(ManagedNode):
        PIPELINED = True

        def __init__(self):
            super().__init__("localization_node", "probe")
            self.prepared, self.processed, self.errors = [], [], []

        def prepare(self, item):
            if item.value < 0:
                raise ValueError(f"cannot prepare {item.value}")
            self.prepared.append(threading.current_thread().name)
            return 10 * item.value

        def _process(self, job):
            assert isinstance(job, Prepared)
            self.processed.append((job.item.value, job.ready, threading.current_thread().name))

        def _on_error(self, item, exc):
            self.errors.append((item.value, str(exc)))

    tester, spin = ros
    node = TwoStage()
    spin(node)
    _wait(lambda: node._active, 30, "autostart")
    for v in (1, -2, 3):
        node.submit(Item(v))
        _wait(lambda: node.counts["processed"] >= (1 if v == 1 else 2 if v == -2 else 3), 10, f"item {v}")
    assert [(v, r) for v, r, _ in node.processed] == [(1, 10), (3, 30)]
    assert node.errors == [(-2, "cannot prepare -2")] and node.counts["errors"] == 1
    assert {t for _, _, t in node.processed} == {"localization_node"}
    assert set(node.prepared) == {"localization_node_front"}
    node.close()
    assert not node.front._thread.is_alive() and not node.worker._thread.is_alive()
