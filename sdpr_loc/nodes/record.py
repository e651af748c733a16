"""`sdpr-loc record -o OUT [TOPIC ...]`: write topics to a rosbag2 file, as `ros2 bag record` does.

Default topics: the localization outputs (pose, odom, path, certificate, /diagnostics). Each
topic's type is discovered from the ROS graph; messages are received serialized (``raw=True``)
and written as they are, stamped with their receive time, through ``rosbags`` (mcap by
default). SIGINT/SIGTERM or ``--duration`` end the recording and close the bag properly.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from sdpr_loc.argtypes import nonnegative
from .runtime import init_stoppable

__all__ = ["add_arguments", "run", "Recorder", "DEFAULT_TOPICS"]

DEFAULT_TOPICS = ("pose", "odom", "path", "certificate", "/diagnostics")


def _qualify(node, topic: str) -> str:
    if topic.startswith("/"):
        return topic
    ns = node.get_namespace().rstrip("/")
    return f"{ns}/{topic}"


class Recorder:
    """Subscribes to ``topics`` as they appear in the graph and writes them to ``path``.

    Call :meth:`poll` periodically (it subscribes to newly discovered topics) and :meth:`close`
    at the end; ``counts`` has messages written per topic; ``on_message(topic, raw, t_ns)`` sees
    each one.
    """

    def __init__(self, node, path: str | Path, topics=DEFAULT_TOPICS, storage: str = "mcap",
                 on_message=None) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore

        self.node = node
        self.topics = [_qualify(node, t) for t in topics]
        self.ts = get_typestore(Stores.ROS2_KILTED)
        self.path = Path(path)
        if self.path.exists():
            raise FileExistsError(f"{self.path} exists; choose another output")
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self.writer = Writer(self.path, version=9, storage_plugin=plugin)
        self.writer.open()
        self.conns: dict[str, object] = {}
        self.subs: dict[str, object] = {}
        self.counts: dict[str, int] = {}
        self.on_message = on_message

    def poll(self) -> None:
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        from .play import message_class

        for name, types in self.node.get_topic_names_and_types():
            if name not in self.topics or name in self.subs or not types:
                continue
            msgtype = types[0]
            if msgtype not in self.ts.types:
                self.node.get_logger().warning(f"cannot record {name}: type {msgtype} unknown to rosbags")
                self.subs[name] = None
                continue
            self.conns[name] = self.writer.add_connection(name, msgtype, typestore=self.ts)
            self.counts[name] = 0
            self.subs[name] = self.node.create_subscription(
                message_class(msgtype), name, lambda raw, n=name: self._write(n, raw),
                QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE), raw=True)

    def _write(self, topic: str, raw: bytes) -> None:
        t = time.time_ns()
        self.writer.write(self.conns[topic], t, bytes(raw))
        self.counts[topic] += 1
        if self.on_message is not None:
            self.on_message(topic, raw, t)

    def close(self) -> None:
        for sub in self.subs.values():
            if sub is not None:
                self.node.destroy_subscription(sub)
        self.subs.clear()
        self.writer.close()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("topics", nargs="*", default=list(DEFAULT_TOPICS),
                        help=f"topics to record (default: {' '.join(DEFAULT_TOPICS)})")
    parser.add_argument("-o", "--output", required=True, help="bag directory to create")
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    parser.add_argument("--duration", type=nonnegative(float), default=0.0, help="stop after this many seconds (0 = on Ctrl-C)")


def run(args: argparse.Namespace) -> int:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    node, stopped = init_stoppable("sdpr_loc_record")
    try:
        rec = Recorder(node, args.output, args.topics or DEFAULT_TOPICS, args.storage)
    except BaseException:  # e.g. the output exists: reported by sdpr_loc.cli after a clean shutdown
        node.destroy_node()
        rclpy.try_shutdown()
        raise
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    end = time.monotonic() + args.duration if args.duration > 0 else float("inf")
    next_poll = 0.0
    try:
        while not stopped() and time.monotonic() < end:
            if time.monotonic() >= next_poll:  # graph queries are not free: twice a second
                rec.poll()
                next_poll = time.monotonic() + 0.5
            ex.spin_once(timeout_sec=0.1)
    finally:
        rec.close()
        ex.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    print(f"recorded {sum(rec.counts.values())} messages to {args.output}: "
          + ", ".join(f"{k} {v}" for k, v in sorted(rec.counts.items())))
    return 0
