"""What every node shares: a newest-wins work queue, a worker thread, and ``run`` (init/spin/exit).

rclpy 9.1.2's MultiThreadedExecutor starves timers when callbacks block, so nodes spin a
SingleThreadedExecutor whose callbacks only stash messages; the heavy work (network, registration)
runs in one worker thread fed through a queue of ONE item: when frames come faster than they are
processed the stale one is dropped (and counted), so latency and memory stay bounded.
"""
from __future__ import annotations

import sys
import threading
import traceback
from typing import Any, Callable

__all__ = ["LatestQueue", "Worker", "run", "cpu_threads", "load_map"]


class LatestQueue:
    """Bounded queue that keeps the newest ``maxlen`` items; ``dropped`` counts the evicted."""

    def __init__(self, maxlen: int = 1) -> None:
        if maxlen < 1:
            raise ValueError("maxlen must be >= 1")
        self.maxlen = maxlen
        self._items: list[Any] = []
        self._cv = threading.Condition()
        self.dropped = 0
        self._closed = False

    def put(self, item: Any) -> None:
        with self._cv:
            self._items.append(item)
            while len(self._items) > self.maxlen:
                self._items.pop(0)
                self.dropped += 1
            self._cv.notify()

    def get(self, timeout: float | None = None) -> Any:
        """Oldest kept item, or None on timeout / after close()."""
        with self._cv:
            if not self._cv.wait_for(lambda: self._items or self._closed, timeout):
                return None
            return self._items.pop(0) if self._items else None

    def clear(self) -> None:
        """Forget the queued items (not counted as dropped)."""
        with self._cv:
            self._items.clear()

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._items.clear()
            self._cv.notify_all()

    def __len__(self) -> int:
        with self._cv:
            return len(self._items)


class Worker:
    """One daemon thread calling ``handle(item)`` for each queued item.

    An exception in ``handle`` goes to ``on_error(item, exc)`` and the loop goes on: one bad
    message never stops the node.
    """

    def __init__(self, handle: Callable[[Any], None], on_error: Callable[[Any, BaseException], None],
                 maxlen: int = 1, name: str = "worker") -> None:
        self.queue = LatestQueue(maxlen)
        self._handle, self._on_error = handle, on_error
        self._stop = threading.Event()
        self.processed = 0
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: Any) -> None:
        self.queue.put(item)

    def _loop(self) -> None:
        while not self._stop.is_set():
            item = self.queue.get(timeout=0.1)
            if item is None:
                continue
            try:
                self._handle(item)
            except Exception as exc:  # noqa: BLE001 - reported, never fatal
                try:
                    self._on_error(item, exc)
                except Exception:  # noqa: BLE001
                    traceback.print_exc()
            finally:
                self.processed += 1

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self.queue.close()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)


def init_stoppable(name: str) -> tuple[Any, Callable[[], bool]]:
    """rclpy init + a node for a command-line tool that stops on SIGINT/SIGTERM by itself
    (finishing its loop and closing its files) instead of rclpy's abrupt context shutdown.
    Returns (node, stopped) where ``stopped()`` turns True after the first signal."""
    import signal

    import rclpy

    rclpy.init(args=[name], signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
    flag = threading.Event()
    signal.signal(signal.SIGINT, lambda *a: flag.set())
    signal.signal(signal.SIGTERM, lambda *a: flag.set())
    return rclpy.create_node(name), flag.is_set


def run(node_factory: Callable[[], Any], args: list[str] | None = None) -> int:
    """Init rclpy, build the node, spin until SIGINT/SIGTERM, then shut down cleanly.

    rclpy's own signal handlers turn SIGINT and SIGTERM into a context shutdown, which ends the
    spin (``ExternalShutdownException`` or ``KeyboardInterrupt``). A node that cannot be built
    (a parameter out of range or of the wrong type) prints why and exits with status 2; a lifecycle
    node whose configure fails (unreadable map or model) stays alive, unconfigured
    (:mod:`sdpr_loc.nodes.managed`).
    """
    import rclpy
    from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    rclpy.init(args=sys.argv if args is None else args)
    node = None
    try:
        try:
            node = node_factory()
        except (InvalidParameterValueException, InvalidParameterTypeException, ValueError, OSError) as err:
            print(f"[sdpr_loc] cannot start: {err}", file=sys.stderr, flush=True)
            return 2
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        try:
            executor.spin()
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        finally:
            _finish_undisturbed()
            executor.shutdown(timeout_sec=1.0)
    finally:
        if node is not None:
            close = getattr(node, "close", None)
            if close is not None:
                close()
            node.destroy_node()
        rclpy.try_shutdown()
        _finish_undisturbed()       # rclpy's shutdown puts back the handlers it found at init
    return 0


def _finish_undisturbed() -> None:
    """Once the node is shutting down, ignore SIGINT and SIGTERM: Ctrl-C in a terminal reaches a
    node twice (the terminal signals the whole process group, the launcher forwards it too), and
    the second one interrupted the shutdown, losing the map teach mode writes then. A node that
    hangs still stops: launchers escalate to SIGKILL."""
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def cpu_threads(n: int) -> None:
    """CPU threads of torch and of numpy's BLAS for a node (0: leave their defaults). Both: with
    its default two threads, numpy's BLAS (the place-recognition vote) took the core of the
    node's other stage and slowed its network by a third (2 cores)."""
    if n > 0:
        import torch
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(int(n))
        threadpool_limits(int(n), user_api="blas")


def load_map(node, p: dict, frontend: str | None = None):
    """The KeyframeMap of a node's ``mode``/``map_path`` parameters (None unless mode is 'map');
    ValueError naming the file when it is missing, unreadable or of another front end."""
    if p["mode"] != "map":
        return None
    from sdpr_loc.data.maps import KeyframeMap

    if not p["map_path"]:
        raise ValueError("mode 'map' needs map_path (a .npz from `sdpr-loc build-map` or teach mode)")
    keyframe_map = KeyframeMap.load(p["map_path"])   # MapError is a ValueError
    if frontend is not None and keyframe_map.frontend not in ("unknown", frontend):
        raise ValueError(f"map {p['map_path']!r} was built with frontend {keyframe_map.frontend!r}, "
                         f"this node runs {frontend!r}")
    node.get_logger().info(f"map {p['map_path']}: {len(keyframe_map)} keyframes, frontend {keyframe_map.frontend}")
    return keyframe_map
