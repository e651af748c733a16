"""`sdpr-loc lifecycle NODE [TRANSITION]`: ``ros2 lifecycle get / set`` for pip installs.

Asks a managed node (:mod:`sdpr_loc.nodes.managed`) for its state over the standard
``lifecycle_msgs`` services, or requests a transition (configure, activate, deactivate, cleanup,
shutdown) and prints the state after it: what a lifecycle manager does for nodes started with
``autostart:=false``. Exit status 0 when the transition succeeded (or only the state was asked),
1 when the node refused or failed it (its log and ``/diagnostics`` say why), 2 when no such node
answers.
"""
from __future__ import annotations

import argparse

from sdpr_loc.argtypes import positive

__all__ = ["add_arguments", "run", "TRANSITIONS"]

TRANSITIONS = ("configure", "activate", "deactivate", "cleanup", "shutdown")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("node", help="node name, with its namespace if any (localization_node, /robot/keypoint_node)")
    parser.add_argument("transition", nargs="?", choices=TRANSITIONS, help="transition to request; none: print the state")
    parser.add_argument("--timeout", type=positive(float), default=30.0, help="seconds to wait for the node (and its answer)")


def run(args: argparse.Namespace) -> int:
    import rclpy
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState, GetState

    from sdpr_loc.errors import UsageError

    name = "/" + args.node.strip("/")
    rclpy.init(args=["sdpr_loc_lifecycle"], signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
    node = rclpy.create_node("sdpr_loc_lifecycle")
    try:
        def call(srv, service: str, request):
            client = node.create_client(srv, f"{name}/{service}")
            if not client.wait_for_service(timeout_sec=args.timeout):
                raise UsageError(f"no lifecycle node {name} answers (is it running, in this ROS_DOMAIN_ID?)")
            future = client.call_async(request)
            rclpy.spin_until_future_complete(node, future, timeout_sec=args.timeout)
            if future.result() is None:
                raise UsageError(f"{name} did not answer {service} within {args.timeout:g} s")
            return future.result()

        ok = True
        if args.transition:
            ok = call(ChangeState, "change_state",
                      ChangeState.Request(transition=Transition(label=args.transition))).success
            print(f"{name}: {args.transition} {'succeeded' if ok else 'FAILED (see the node log / /diagnostics)'}")
        print(f"{name}: {call(GetState, 'get_state', GetState.Request()).current_state.label}")
        return 0 if ok else 1
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
