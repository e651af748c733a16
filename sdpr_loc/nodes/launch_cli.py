"""`sdpr-loc launch localize|train [name:=value ...]`: ``ros2 launch`` for pip installs.

Starts the nodes of :mod:`sdpr_loc.nodes.bringup` as separate processes (they talk over DDS like
under ros2 launch), forwards SIGINT/SIGTERM, and stops them all when one exits; the exit status is
the first failing node's. ``--dry-run`` prints the commands instead.
"""
from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from . import bringup

__all__ = ["add_arguments", "run", "start", "stop", "wait_any"]


def start(launches: list[bringup.NodeLaunch], env: dict | None = None, log_dir: str | Path | None = None,
          extra_args: list[str] | None = None) -> list[subprocess.Popen]:
    """Start each node; output to ``log_dir/<node>.log`` when given, else inherited."""
    procs = []
    for n in launches:
        out: IO | None = None
        if log_dir is not None:
            Path(log_dir).mkdir(parents=True, exist_ok=True)
            out = open(Path(log_dir) / f"{n.entry.name}.log", "w")  # noqa: SIM115 - owned by the process
        cmd = n.command() + list(extra_args or [])
        p = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT if out else None)
        p.node_name = n.entry.name  # type: ignore[attr-defined]
        p.log = out  # type: ignore[attr-defined]
        procs.append(p)
    return procs


def stop(procs: list[subprocess.Popen], timeout: float = 10.0) -> None:
    """SIGINT (clean node shutdown), then SIGTERM, then SIGKILL for the stubborn."""
    for sig, wait in ((signal.SIGINT, timeout), (signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
        alive = [p for p in procs if p.poll() is None]
        if not alive:
            break
        for p in alive:
            p.send_signal(sig)
        deadline = time.monotonic() + wait
        for p in alive:
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
    for p in procs:
        log = getattr(p, "log", None)
        if log is not None:
            log.close()


def wait_any(procs: list[subprocess.Popen], stop_flag: list[bool], poll: float = 0.2) -> subprocess.Popen | None:
    """Block until a process exits (returned) or ``stop_flag[0]`` is set (None)."""
    while not stop_flag[0]:
        for p in procs:
            if p.poll() is not None:
                return p
        time.sleep(poll)
    return None


def check_inputs(assignments: dict[str, str]) -> None:
    """Open every file the launch arguments name, so a missing or corrupt one fails here (a user
    error naming it) before any node starts, instead of in a node's log."""
    from sdpr_loc.data.bags import StereoBag
    from sdpr_loc.data.maps import KeyframeMap
    from sdpr_loc.errors import UsageError
    from sdpr_loc.vision.frontend import FRONTENDS, load_model

    for name, value in assignments.items():
        if not value:
            continue
        if name == "map":
            KeyframeMap.load(value)
        elif name in ("model", "base_model"):
            load_model(value, device="cpu")
        elif name == "frontend" and value not in FRONTENDS:
            raise UsageError(f"frontend must be one of {FRONTENDS}, got {value!r}")
        elif name in ("teach", "repeat"):
            for path in bringup._csv(value):
                with StereoBag(path) as bag:
                    bag.require_frames()
        elif name == "params_file":
            import yaml

            try:
                yaml.safe_load(Path(value).read_bytes())  # bytes: an undecodable file is a YAMLError
            except yaml.YAMLError as err:
                raise UsageError(f"params_file {value!r} is not YAML: {' '.join(str(err).split())}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("launch", choices=sorted(bringup.LAUNCHES), help="which node set")
    parser.add_argument("assignments", nargs="*", metavar="name:=value",
                        help="launch arguments, as for ros2 launch (see --list)")
    parser.add_argument("--list", action="store_true", help="list the launch arguments and exit")
    parser.add_argument("--dry-run", action="store_true", help="print the node commands and exit")


def run(args: argparse.Namespace) -> int:
    if args.list:
        for a in bringup.arguments(args.launch):
            print(f"{a.name}:={a.default!r:12}  {a.description}")
        return 0
    from sdpr_loc.errors import UsageError

    try:
        assignments = bringup.parse_assignments(args.assignments)
        launches = bringup.plan(args.launch, assignments)
    except ValueError as err:  # an unknown argument or a value of the wrong kind
        raise UsageError(str(err)) from err
    if args.dry_run:
        for n in launches:
            print(shlex.join(n.command()))
        return 0
    check_inputs(assignments)
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    procs = start(launches, env=env)
    stop_flag = [False]

    def on_signal(signum, frame):
        stop_flag[0] = True

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        first = wait_any(procs, stop_flag)
    finally:
        stop(procs)
        for s, h in old.items():
            signal.signal(s, h)
    if first is not None:
        code = first.returncode
        print(f"sdpr-loc launch: {first.node_name} exited with status {code}; stopped the others",
              file=sys.stderr)
        return code if code else 0
    return 0
