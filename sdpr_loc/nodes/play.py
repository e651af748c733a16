"""`sdpr-loc play BAG`: publish a rosbag2's messages at the recorded rate, as `ros2 bag play` does.

Messages go out as the serialized bytes stored in the bag (no decode/re-encode), on the
recorded topics (``--remap old:=new`` to rename), paced by their bag time scaled by ``--rate``.
``--topics`` limits what is played. Reading uses ``rosbags`` (sqlite3 and mcap).
"""
from __future__ import annotations

import argparse
import importlib
import time
from pathlib import Path

from sdpr_loc.argtypes import nonnegative, positive
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


def playable(reader, bag: str | Path, topics: list[str] | None = None) -> list:
    """The connections of an open rosbags ``reader`` to play; BagError naming ``bag`` when none."""
    from sdpr_loc.data.errors import EmptyBagError, MissingTopicError, TopicTypeError

    conns = [c for c in reader.connections if not topics or c.topic in topics]
    if not conns:
        have = sorted({c.topic for c in reader.connections})
        raise MissingTopicError(f"no topics to play in bag {str(bag)!r} (asked {topics}, bag has {have})")
    if not sum(c.msgcount for c in conns):
        raise EmptyBagError(f"bag {str(bag)!r} has no messages on {sorted({c.topic for c in conns})}")
    for c in conns:
        try:
            message_class(c.msgtype)
        except ValueError as err:
            raise TopicTypeError(f"bag {str(bag)!r}, topic {c.topic!r}: {err}") from None
    return conns


def play(node, bag: str | Path, rate: float = 1.0, topics: list[str] | None = None,
         remap: dict[str, str] | None = None, stop=lambda: False, on_publish=None) -> int:
    """Publish ``bag`` from ``node``; returns the number of messages published.

    ``on_publish(topic, bag_time_ns, wall_time)`` is called after each message (for latency
    measurements). ``stop()`` returning True ends playback early.
    """
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    from sdpr_loc.data.bags import open_reader

    if not rate > 0:
        raise ValueError(f"rate must be positive, got {rate}")
    remap = remap or {}
    count = 0
    reader = open_reader(bag)
    try:
        conns = playable(reader, bag, topics)
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
    finally:
        reader.close()
    return count


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bag", help="rosbag2 directory or .mcap/.db3 file")
    parser.add_argument("--rate", type=positive(float), default=1.0, help="playback speed factor (default 1)")
    parser.add_argument("--topics", nargs="+", help="play only these topics")
    parser.add_argument("--remap", nargs="+", default=[], metavar="OLD:=NEW", help="rename topics")
    parser.add_argument("--loop", action="store_true", help="start again at the end")
    parser.add_argument("--delay", type=nonnegative(float), default=1.0,
                        help="seconds to wait for subscribers to be discovered before playing")


def run(args: argparse.Namespace) -> int:
    import rclpy

    from sdpr_loc.data.bags import open_reader
    from sdpr_loc.errors import UsageError

    remap = {}
    for item in args.remap:
        if ":=" not in item:
            raise UsageError(f"--remap takes OLD:=NEW, got {item!r}")
        old, new = item.split(":=", 1)
        remap[old] = new
    reader = open_reader(args.bag)  # a missing, corrupt or empty bag fails here, before any node
    try:
        playable(reader, args.bag, args.topics)
    finally:
        reader.close()
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
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
