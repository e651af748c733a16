"""`sdpr-loc play BAG`: publish a rosbag2's messages at the recorded rate, as `ros2 bag play` does.

Messages go out as the serialized bytes stored in the bag (no decode/re-encode), on the
recorded topics (``--remap old:=new`` to rename), paced by their bag time scaled by ``--rate``.
``--topics`` limits what is played. Reading uses ``rosbags`` (sqlite3 and mcap).
"""
from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

from .runtime import init_stoppable

__all__ = ["add_arguments", "run", "message_class", "play"]


def message_class(msgtype: str):
    """'sensor_msgs/msg/Image' -> the rclpy message class (ValueError if not installed)."""
    parts = msgtype.split("/")
    if len(parts) != 3:
        raise ValueError(f"not a ROS 2 message type name: {msgtype!r}")
    pkg, kind, name = parts
    try:
        return getattr(importlib.import_module(f"{pkg}.{kind}"), name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"message type {msgtype} is not installed ({err})") from None


def play(node, bag: str | Path, rate: float = 1.0, topics: list[str] | None = None,
         remap: dict[str, str] | None = None, stop=lambda: False, on_publish=None) -> int:
    """Publish ``bag`` from ``node``; returns the number of messages published.

    ``on_publish(topic, bag_time_ns, wall_time)`` is called after each message (for latency
    measurements). ``stop()`` returning True ends playback early.
    """
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rosbags.rosbag2 import Reader

    if not rate > 0:
        raise ValueError(f"rate must be positive, got {rate}")
    remap = remap or {}
    count = 0
    with Reader(Path(bag)) as reader:
        conns = [c for c in reader.connections if not topics or c.topic in topics]
        if not conns:
            have = sorted({c.topic for c in reader.connections})
            raise ValueError(f"no topics to play in {bag} (asked {topics}, bag has {have})")
        pubs = {}
        for c in conns:
            if c.topic not in pubs:
                pubs[c.topic] = node.create_publisher(message_class(c.msgtype), remap.get(c.topic, c.topic),
                                                      QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        t0_bag = t0_wall = None
        for conn, t, raw in reader.messages(connections=conns):
            if stop():
                break
            if t0_bag is None:
                t0_bag, t0_wall = t, time.monotonic()
            delay = t0_wall + (t - t0_bag) * 1e-9 / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            pubs[conn.topic].publish(bytes(raw))
            count += 1
            if on_publish is not None:
                on_publish(conn.topic, t, time.monotonic())
    return count


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bag", help="rosbag2 directory or .mcap/.db3 file")
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1)")
    parser.add_argument("--topics", nargs="+", help="play only these topics")
    parser.add_argument("--remap", nargs="+", default=[], metavar="OLD:=NEW", help="rename topics")
    parser.add_argument("--loop", action="store_true", help="start again at the end")
    parser.add_argument("--delay", type=float, default=1.0,
                        help="seconds to wait for subscribers to be discovered before playing")


def run(args: argparse.Namespace) -> int:
    import rclpy

    if not args.rate > 0:
        print("sdpr-loc play: --rate must be positive", file=sys.stderr)
        return 2
    if not Path(args.bag).exists():
        print(f"sdpr-loc play: {args.bag} does not exist", file=sys.stderr)
        return 2
    remap = {}
    for item in args.remap:
        if ":=" not in item:
            print(f"sdpr-loc play: --remap takes OLD:=NEW, got {item!r}", file=sys.stderr)
            return 2
        old, new = item.split(":=", 1)
        remap[old] = new
    node, stopped = init_stoppable("sdpr_loc_play")
    try:
        time.sleep(max(0.0, args.delay))
        total = 0
        while not stopped():
            total += play(node, args.bag, args.rate, args.topics, remap, stop=stopped)
            if not args.loop:
                break
        print(f"played {total} messages from {args.bag}")
        return 0
    except ValueError as err:
        print(f"sdpr-loc play: {err}", file=sys.stderr)
        return 2
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
