"""The ``sdpr-loc`` command.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and ``run(args)``; the
module is imported only when its subcommand is used, so ``sdpr-loc --help`` stays fast.

Errors: :func:`run_command` is the one place that turns a user error (``sdpr_loc.errors.UserError``
and its families, or a missing / unreadable path) into one line ``sdpr-loc <command>: error: ...``
and exit status 2. Any other exception is a bug and keeps its traceback. ``--debug`` (before the
command) or ``SDPR_LOC_DEBUG=1`` prints the traceback of user errors too.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from typing import Callable

from sdpr_loc.errors import UserError

# name -> (module, one-line help). Add one line per subcommand.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("sdpr_loc.nodes.demo", "run the main demo: teach by day, repeat at night, over DDS"),
    "polymin-fit": ("sdpr_loc.examples.polymin_fit", "paper example 1: learn where a polynomial's global minimum is"),
    "stereo-cal": ("sdpr_loc.examples.stereo_cal", "paper example 2: tune stereo camera parameters through certified localization"),
    "make-bag": ("sdpr_loc.data.make_bag", "render a synthetic stereo drive to a rosbag2 file"),
    "import-kitti": ("sdpr_loc.data.import_kitti", "import a KITTI stereo folder (odometry or raw layout) as a rosbag2"),
    "launch": ("sdpr_loc.nodes.launch_cli", "start the ROS 2 nodes of a launch (pip twin of ros2 launch)"),
    "lifecycle": ("sdpr_loc.nodes.lifecycle_cli", "get or change a managed node's lifecycle state (pip twin of ros2 lifecycle)"),
    "play": ("sdpr_loc.nodes.play", "publish a rosbag2's topics at the recorded rate"),
    "record": ("sdpr_loc.nodes.record", "record ROS 2 topics to a rosbag2 file"),
    "train": ("sdpr_loc.training.train_cli", "train or fine-tune the keypoint network from rosbags"),
    "build-map": ("sdpr_loc.evaluation.build_map_cli", "keyframe map of a teach drive"),
    "eval": ("sdpr_loc.evaluation.eval_cli", "localize a repeat drive against a map; table, CSV, PNG"),
}


DEBUG_ENV = "SDPR_LOC_DEBUG"
# a path the user gave that is missing, a directory, or not readable/writable: the user's to fix
PATH_ERRORS = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sdpr-loc", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true",
                        help=f"show tracebacks for user errors too (or set {DEBUG_ENV}=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def _message(name: str, err: BaseException) -> str:
    """One line: the error's message (OS errors: reason and path), whitespace collapsed."""
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        text = f"{err.strerror}: {str(err.filename)!r}"
    elif isinstance(err, SystemExit):  # raise SystemExit("...") from a command, maybe prefixed
        text = str(err.code).removeprefix(f"sdpr-loc {name}:").strip().removeprefix("error:")
    else:
        text = str(err) or type(err).__name__
    return " ".join(text.split())


def run_command(name: str, call: Callable[[], int | None], debug: bool = False) -> int:
    """Run one command; a user error becomes one line on stderr and exit status 2, a bug raises.

    User errors: :class:`UserError`, an OS error about a path, and ``SystemExit("message")``
    (argparse's own exits carry a status, not a message, and pass through). Ctrl-C
    (``KeyboardInterrupt``) is one line too, exit status 130 as shells report it.
    """
    try:
        return int(call() or 0)
    except KeyboardInterrupt:    # Ctrl-C: the user's own stop, not a bug (files are written atomically)
        if debug:
            traceback.print_exc()
        print(f"sdpr-loc {name}: interrupted", file=sys.stderr)
        return 130
    except (UserError, SystemExit, *PATH_ERRORS) as err:
        if isinstance(err, SystemExit) and not isinstance(err.code, str):
            raise
        if debug:
            traceback.print_exc()
        print(f"sdpr-loc {name}: error: {_message(name, err)}", file=sys.stderr)
        return 2


def _debug_env() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = _debug_env()
    while argv and argv[0] == "--debug":
        debug = True
        argv = argv[1:]
    if not argv or argv[0] not in COMMANDS:
        _parser().parse_args(argv or ["--help"])
        return 2
    name, rest = argv[0], argv[1:]

    def call() -> int | None:
        module = importlib.import_module(COMMANDS[name][0])
        parser = argparse.ArgumentParser(prog=f"sdpr-loc {name}", description=COMMANDS[name][1])
        module.add_arguments(parser)
        return module.run(parser.parse_args(rest))

    return run_command(name, call, debug)


if __name__ == "__main__":
    sys.exit(main())
