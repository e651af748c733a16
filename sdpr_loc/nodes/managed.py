"""Managed (lifecycle) runtime nodes and their 1 Hz ``/diagnostics`` summary: ONE base class.

:class:`ManagedNode` is an rclpy ``LifecycleNode`` (standard ``lifecycle_msgs`` services
``~/change_state``, ``~/get_state``, ...). A node declares its parameters at construction (so
``--params-file`` / ``-p`` and range checks work as before) and implements four hooks:

* ``configure(p)``: validate the parameters together, load the model / map, build the tracker and
  create the (lifecycle) publishers; raise ``ValueError`` / ``OSError`` with the reason to fail.
  A failed configure is logged and leaves the node alive in ``unconfigured`` (what it created is
  destroyed again); the 1 Hz summary says ERROR and why until a configure succeeds.
* ``activate()``: create the subscriptions (input starts flowing). The lifecycle publishers are
  enabled by the base class.
* ``_process(item)`` / ``_on_error(item, exc)``: one input item, in the worker thread.
* optionally ``prepare(item)`` (``PIPELINED = True``): the per-item work that shares no state
  with ``_process`` (decoding, the network), in a front worker thread of its own: it runs on
  the next frame while ``_process`` localizes this one (two cores, one torch thread each), and
  ``_process`` gets a :class:`Prepared`.
* ``release()``: drop the model / map / tracker (cleanup, shutdown, process exit).

Deactivate destroys the subscriptions created by ``activate()``, empties the work queue and
disables the publishers: no output, nothing processed, the state (tracker, camera, path) kept.
Cleanup also destroys what ``configure`` created. The worker thread lives as long as the node;
it skips items unless the node is active.

``autostart`` (parameter, default true): once spinning, the node configures and activates itself
(what a lifecycle manager would do), the same for ``sdpr-loc launch`` and ``ros2 launch``; with
``autostart:=false`` it waits in ``unconfigured`` for ``ChangeState`` requests.

The summary (diagnostic_msgs/DiagnosticArray on ``/diagnostics``, status name ``<node>: <what>``,
hardware_id the camera frame) reports over the last ``diagnostics_window_s``: input, processed,
certified and integrity-OK rates (Hz), latency p50 / p95 (input callback -> processed, ms), queue
drops, and the lifecycle state. Level: ERROR when configure failed, frames arrive but none is
processed, or certification stopped; WARN when no input arrived in the window, processing falls
below half the input rate (drops), or fewer than half the processed frames are certified /
integrity-OK; OK otherwise (and while deliberately not active).
"""
from __future__ import annotations

import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from sdpr_loc.vision.integrity import PASS
from sdpr_loc.vision.tracker import TrackerConfig

from . import convert
from .params import declare
from .runtime import Worker

__all__ = ["ManagedNode", "Prepared", "summary_level"]

OK, WARN, ERROR = 0, 1, 2
_COUNTS = ("input", "processed", "errors", "certified", "integrity_ok", "dropped")
LATENCY_SAMPLES = 1000      # the latency window holds at most this many samples (and window_s of them)


def summary_level(rates: dict[str, float], window_s: float, since_input_s: float | None,
                  certifies: bool) -> tuple[int, str]:
    """(level, message) of a summary: ``rates`` in Hz over the window, ``since_input_s`` the age
    of the newest input (None: none yet), ``certifies``: the node produces certified poses."""
    if since_input_s is None:
        return WARN, "no input yet"
    if since_input_s > window_s:
        return WARN, f"no input for {since_input_s:.0f} s"
    if rates["input"] > 0 and rates["processed"] == 0:
        return ERROR, f"input at {rates['input']:.1f} Hz but no frame processed in {window_s:.0f} s"
    level, why = OK, []
    if rates["processed"] < 0.5 * rates["input"]:
        level, why = WARN, [f"processing {rates['processed']:.1f} Hz of {rates['input']:.1f} Hz input (drops)"]
    if certifies and rates["processed"] > 0:
        if rates["certified"] == 0:
            return ERROR, f"certification stopped: no certified pose in {window_s:.0f} s"
        if rates["certified"] < 0.5 * rates["processed"]:
            level = WARN
            why.append(f"{100 * rates['certified'] / rates['processed']:.0f} % of frames certified")
        if rates["integrity_ok"] < 0.5 * rates["certified"]:
            level = WARN
            why.append(f"{100 * rates['integrity_ok'] / rates['certified']:.0f} % of certified poses integrity OK")
    return level, "; ".join(why) or "running"


@dataclass
class Prepared:
    """An input ``item`` and what the front stage (:meth:`ManagedNode.prepare`) made of it."""

    item: Any
    ready: Any


class ManagedNode(LifecycleNode):
    """Lifecycle + worker + 1 Hz summary shared by the runtime nodes (see the module docstring).

    ``what`` names the summary status (``<node name>: <what>``); ``certifies``: the node counts
    certified / integrity-OK results (:meth:`count_result`) and is judged on them.
    """

    input = None   # the StereoInput of a node fed stereo images (kept over cleanup / configure)
    PIPELINED = False   # True: prepare() runs in a front worker, overlapping _process of the item before

    def __init__(self, name: str, what: str, certifies: bool = False, **node_kwargs: Any) -> None:
        super().__init__(name, **node_kwargs)
        self.what, self.certifies = what, certifies
        self.p = declare(self, name, on_change=self._params_changed)
        self.config_error = ""
        self.hardware_id = ""
        self.counts = dict.fromkeys(_COUNTS, 0)
        self.latency_ms: deque = deque(maxlen=LATENCY_SAMPLES)      # (monotonic t, ms)
        self._history: deque = deque(maxlen=4096)                   # (monotonic t, counts)
        self._last_input: float | None = None
        self._active = False
        self._lock = threading.Lock()                               # held while an item is processed
        self._front_lock = threading.Lock()                         # ... or prepared
        self._configured: list = []
        self._activated: list = []
        self.worker = Worker(self._work, self._work_error, maxlen=1, name=name)
        self.front = Worker(self._front_work, self._work_error, maxlen=1, name=f"{name}_front") if self.PIPELINED else None
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._summary_timer = self.create_timer(1.0, self.publish_summary)
        self._autostart_timer = self.create_timer(0.01, self._autostart) if self.p["autostart"] else None

    # ----- hooks -----
    def configure(self, p: dict) -> None:
        """Load and build what the node needs; raise ValueError / OSError with the reason."""

    def activate(self) -> None:
        """Create the subscriptions."""

    def release(self) -> None:
        """Drop what configure loaded (idempotent)."""

    def params_changed(self, changes: dict) -> str:
        """A validated change of parameters while running; '' accepts, a reason vetoes."""
        return ""

    # ----- lifecycle -----
    @property
    def lifecycle_state(self) -> str:
        return self._state_machine.current_state[1]

    def _autostart(self) -> None:
        self.destroy_timer(self._autostart_timer)
        self._autostart_timer = None
        if self.lifecycle_state == "unconfigured" and self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            self.trigger_activate()

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        before = self._entities()
        try:
            self.configure(dict(self.p))
        except Exception as err:  # noqa: BLE001 - any reason: logged, the node stays unconfigured
            self.config_error = str(err) if isinstance(err, (ValueError, OSError)) else \
                f"{type(err).__name__}: {err}"
            self.get_logger().error(f"configure failed: {self.config_error}")
            self._destroy(self._created_since(before))
            self.release()
            return TransitionCallbackReturn.FAILURE
        self._configured = self._created_since(before)
        self.config_error = ""
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        before = self._entities()
        try:
            self.activate()
        except Exception as err:  # noqa: BLE001
            self.get_logger().error(f"activate failed: {type(err).__name__}: {err}")
            self._destroy(self._created_since(before))
            return TransitionCallbackReturn.FAILURE
        self._activated = self._created_since(before)
        self._history.clear()
        self._active = True
        return super().on_activate(state)          # enables the lifecycle publishers

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_input()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._unconfigure()
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_input()
        self._unconfigure()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_input()
        self._unconfigure()
        return TransitionCallbackReturn.SUCCESS    # back to unconfigured, alive

    def _stop_input(self) -> None:
        self._active = False
        self._destroy(self._activated)
        self._activated = []
        for w in self._workers:
            w.queue.clear()
        with self._front_lock, self._lock:         # the frame in progress finishes (unpublished)
            pass

    def _unconfigure(self) -> None:
        with self._front_lock, self._lock:
            self.release()
        self._destroy(self._configured)
        self._configured = []

    def close(self) -> None:
        """Process exit (after spinning): stop the worker and release (teach: writes the map)."""
        self._active = False
        for w in self._workers:
            w.stop()
        with self._front_lock, self._lock:
            self.release()

    @property
    def _workers(self) -> list:
        return [w for w in (self.front, self.worker) if w is not None]

    @property
    def behind(self) -> bool:
        """A newer input waits in a work queue: the node is not keeping up (work may be cut short)."""
        return any(len(w.queue) > 0 for w in self._workers)

    @property
    def queue_drops(self) -> int:
        """Items the work queues dropped (newest wins)."""
        return sum(w.queue.dropped for w in self._workers)

    # ----- entities created by the hooks -----
    def _entities(self) -> list:
        return [*self.publishers, *self.subscriptions, *self.services, *self.timers]

    def _created_since(self, before: list) -> list:
        ids = {id(e) for e in before}
        return [e for e in self._entities() if id(e) not in ids]

    def _destroy(self, entities: list) -> None:
        from rclpy.lifecycle.publisher import LifecyclePublisher
        from rclpy.publisher import Publisher
        from rclpy.service import Service
        from rclpy.subscription import Subscription

        for e in entities:
            if isinstance(e, LifecyclePublisher):
                self.destroy_lifecycle_publisher(e)
            elif isinstance(e, Publisher):
                self.destroy_publisher(e)
            elif isinstance(e, Subscription):
                self.destroy_subscription(e)
            elif isinstance(e, Service):
                self.destroy_service(e)
            else:
                self.destroy_timer(e)

    # ----- parameters -----
    def _params_changed(self, changes: dict) -> str:
        why = self.params_changed(changes)
        if not why:
            self.p.update(changes)
            if "sync_tolerance_ms" in changes and self.input is not None:
                self.input.sync_tol_ns = int(changes["sync_tolerance_ms"] * 1e6)
        return why

    # ----- work -----
    def submit(self, item: Any) -> None:
        """Executor callback side: count and queue one input item (newest wins)."""
        self._last_input = time.monotonic()
        self.counts["input"] += 1
        header = getattr(item, "header", None) or item[0].header
        self.hardware_id = header.frame_id or self.hardware_id
        (self.front or self.worker).submit((self._last_input, item))

    def _front_work(self, job) -> None:
        self._stage(job, self._front_lock, self.prepare,
                    lambda t_in, item, ready: self.worker.submit((t_in, Prepared(item, ready))))

    def _work(self, job) -> None:
        self._stage(job, self._lock, self._process, lambda t_in, item, _: self._done(t_in))

    def _stage(self, job, lock: threading.Lock, run, then) -> None:
        """One stage of one item: ``run(item)`` under ``lock`` while active, then ``then(t_in, item,
        result)``; a failure is reported with the input item (``_on_error``) and ends the item."""
        t_in, item = job
        with lock:
            if not self._active:
                return
            try:
                out = run(item)
            except Exception as exc:  # noqa: BLE001 - reported, never fatal
                self._failed(t_in, item.item if isinstance(item, Prepared) else item, exc)
                return
        then(t_in, item, out)

    def _failed(self, t_in: float, item: Any, exc: BaseException) -> None:
        self.counts["errors"] += 1
        try:
            self._on_error(item, exc)
        finally:
            self._done(t_in)

    def _done(self, t_in: float) -> None:
        self.counts["processed"] += 1
        self.latency_ms.append((time.monotonic(), 1e3 * (time.monotonic() - t_in)))

    @staticmethod
    def _work_error(job, exc: BaseException) -> None:   # _on_error itself failed
        traceback.print_exception(exc)

    def prepare(self, item: Any) -> Any:
        """Front stage of a ``PIPELINED`` node (see the module docstring)."""
        raise NotImplementedError

    def _process(self, item: Any) -> None:
        raise NotImplementedError

    def _on_error(self, item: Any, exc: BaseException) -> None:
        self.get_logger().warning(f"{type(exc).__name__}: {exc}", throttle_duration_sec=1.0)

    def count_result(self, res) -> None:
        """Count a localization result in the summary (certified, integrity OK)."""
        if res.certified:
            self.counts["certified"] += 1
            if res.integrity == PASS:
                self.counts["integrity_ok"] += 1

    def extra_drops(self) -> int:
        """Drops besides the work queue's: unpaired stereo images."""
        return self.input.unpaired if self.input is not None else 0

    # ----- 1 Hz summary -----
    def summary(self) -> tuple[int, str, dict]:
        """(level, message, values) over the last ``diagnostics_window_s``."""
        now, window = time.monotonic(), float(self.p["diagnostics_window_s"])
        counts = {**self.counts, "dropped": self.queue_drops + self.extra_drops()}
        self._history.append((now, counts))
        while len(self._history) > 1 and self._history[1][0] <= now - window:
            self._history.popleft()
        t0, c0 = self._history[0]
        dt = now - t0
        rates = {k: (counts[k] - c0[k]) / dt if dt > 0 else 0.0 for k in _COUNTS}
        lat = np.array([ms for t, ms in self.latency_ms if t >= now - window])
        state = self.lifecycle_state
        values: dict[str, Any] = {"state": state, "window_s": round(dt, 3)}
        for k in ("input", "processed") + (("certified", "integrity_ok") if self.certifies else ()):
            values[f"{k}_hz"] = rates[k]
        values.update({"latency_p50_ms": float(np.percentile(lat, 50)) if lat.size else float("nan"),
                       "latency_p95_ms": float(np.percentile(lat, 95)) if lat.size else float("nan"),
                       "latency_samples": int(lat.size), "queue_drops": counts["dropped"],
                       "queue_drops_window": counts["dropped"] - c0["dropped"],
                       "errors_window": counts["errors"] - c0["errors"], "frames": counts["processed"]})
        if self.config_error:
            return ERROR, f"configure failed: {self.config_error}", values
        if state != "active" or dt <= 0:
            return OK, state if state != "active" else "starting", values
        since = None if self._last_input is None else now - self._last_input
        level, message = summary_level(rates, window, since, self.certifies)
        return level, message, values

    def publish_summary(self) -> None:
        level, message, values = self.summary()
        status = convert.diagnostic(level, f"{self.get_name()}: {self.what}", message, values,
                                    hardware_id=self.hardware_id)
        self.pub_diag.publish(DiagnosticArray(header=convert.header(self.get_clock().now().nanoseconds, ""),
                                              status=[status]))


class TrackingNode(ManagedNode):
    """A ManagedNode that localizes with a Tracker and publishes through PoseOutputs (the
    localization and registration nodes): a parameter change retunes both, or is vetoed with the
    Tracker's own reason. ``TRACKER_KEYS``: the TrackerConfig fields that are node parameters."""

    TRACKER_KEYS: tuple[str, ...] = ("min_matches", "min_inliers", "keyframe_distance", "keyframe_angle",
                                     "max_lost", "map_candidates", "enough_inliers")
    tracker = out = None

    def __init__(self, name: str, what: str, **node_kwargs: Any) -> None:
        super().__init__(name, what, certifies=True, **node_kwargs)

    def _certificate(self, res, frame_id: str, published: bool, extra: dict | None = None) -> None:
        """Count the result and publish its certificate (``extra``: node-specific values)."""
        self.count_result(res)
        self.out.certificate(res, frame_id, published, {"mode": self.p["mode"],
                                                        "dropped": self.queue_drops, **(extra or {})})

    def tracker_config(self, p: dict) -> TrackerConfig:
        mode = "odometry" if p["mode"] == "teach" else p["mode"]
        return TrackerConfig(mode=mode, seed=int(p["seed"]), **{k: p[k] for k in self.TRACKER_KEYS})

    def params_changed(self, changes: dict) -> str:
        merged = {**self.p, **changes}
        try:
            cfg = self.tracker_config(merged)
        except ValueError as err:
            return str(err)
        self.publish_uncertified = bool(merged["publish_uncertified"])
        if self.tracker is not None:
            self.tracker.config = cfg
        if "max_path_length" in changes and self.out is not None:
            self.out.set_path_length(int(merged["max_path_length"]))
        return ""
