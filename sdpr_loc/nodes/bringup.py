"""The node list: ONE table read by ``launch/*.launch.py`` (ROS 2 installs) and ``sdpr-loc launch``.

Both turn :func:`plan` (launch name + ``name:=value`` arguments -> nodes with their parameter
files and overrides) into processes: launch_ros ``Node`` actions there, ``python -m <module>
--ros-args ...`` subprocesses here. Nothing is listed twice, so the two cannot drift (the tests
check that both produce the same nodes, executables and parameters).

Light module: stdlib only at import time (launch files import it before anything else).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["NodeEntry", "Argument", "NodeLaunch", "NODES", "LAUNCHES", "arguments", "plan", "PACKAGE"]

PACKAGE = "sdpr_loc"


@dataclass(frozen=True)
class NodeEntry:
    """name: ROS node name (and its params-file section); executable: console script installed in
    lib/sdpr_loc (what launch_ros runs); module: the same ``main()`` for ``python -m``;
    configs: the package parameter files it is started with (config/), in order."""

    name: str
    executable: str
    module: str
    configs: tuple[str, ...] = ("localize.yaml",)
    remappings: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Argument:
    """A launch argument; ``to_params(value)`` -> {node name: {parameter: value}} overrides."""

    name: str
    default: str
    description: str
    to_params: Callable[[str], dict[str, dict[str, Any]]] = field(default=lambda v: {}, compare=False)


@dataclass
class NodeLaunch:
    """One node to start: its entry, namespace, parameter files and overrides (applied last)."""

    entry: NodeEntry
    namespace: str
    params_files: list[str]
    overrides: dict[str, Any]

    def parameters(self) -> list:
        """launch_ros ``Node(parameters=...)`` form: files, then one dict of overrides."""
        return [*self.params_files, dict(self.overrides)] if self.overrides else list(self.params_files)

    def command(self, python: str = sys.executable) -> list[str]:
        """The pip equivalent: ``python -m module --ros-args -r __node:=... --params-file f -p k:=v``."""
        cmd = [python, "-m", self.entry.module, "--ros-args", "-r", f"__node:={self.entry.name}"]
        if self.namespace:
            cmd += ["-r", f"__ns:=/{self.namespace.strip('/')}"]
        for src, dst in self.entry.remappings:
            cmd += ["-r", f"{src}:={dst}"]
        for f in self.params_files:
            cmd += ["--params-file", f]
        for k, v in self.overrides.items():
            cmd += ["-p", f"{k}:={_yaml_value(v)}"]
        return cmd


def _yaml_value(v: Any) -> str:
    import yaml

    return yaml.safe_dump(v, default_flow_style=True, width=1 << 20).strip().removesuffix("...").strip()


def _truthy(v: str) -> bool:
    s = str(v).strip().lower()
    if s in ("true", "1", "yes", "on"):
        return True
    if s in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {v!r}")


def _csv(v: str) -> list[str]:
    return [b.strip() for b in v.split(",") if b.strip()]


def _int(name: str) -> Callable[[str], int]:
    def conv(v: str) -> int:
        try:
            return int(v)
        except ValueError:
            raise ValueError(f"{name} must be an integer, got {v!r}") from None
    return conv


LOCALIZATION = NodeEntry("localization_node", "localization_node", "sdpr_loc.nodes.localization_node")
KEYPOINT = NodeEntry("keypoint_node", "keypoint_node", "sdpr_loc.nodes.keypoint_node")
REGISTRATION = NodeEntry("registration_node", "registration_node", "sdpr_loc.nodes.registration_node")
TRAINER = NodeEntry("trainer_node", "trainer_node", "sdpr_loc.nodes.trainer_node",
                    configs=("train.yaml", "localize.yaml"))
NODES: dict[str, NodeEntry] = {n.name: n for n in (LOCALIZATION, KEYPOINT, REGISTRATION, TRAINER)}

def _autostart(*nodes: str) -> Argument:
    """The lifecycle nodes configure and activate themselves (their ``autostart`` parameter,
    default true); ``autostart:=false`` leaves them unconfigured for a lifecycle manager."""
    return Argument("autostart", "true", "configure and activate the lifecycle nodes at start; false: "
                    "leave them unconfigured for a lifecycle manager (ChangeState)",
                    lambda v: {} if _truthy(v) else {n: {"autostart": False} for n in nodes})


_COMMON = (
    Argument("params_file", "", "extra ROS parameter file, applied after the package's config/*.yaml"),
    Argument("namespace", "", "namespace of all nodes (e.g. a robot name)"),
)
LAUNCHES: dict[str, tuple[tuple[NodeEntry, ...], tuple[Argument, ...]]] = {
    "localize": ((LOCALIZATION,), _COMMON + (
        Argument("map", "", "keyframe map (.npz): localize in it (mode map); '' = the params file's mode",
                 lambda v: {"localization_node": {"mode": "map", "map_path": v}} if v else {}),
        Argument("mode", "", "map | odometry | teach ('' = map when map:= is given, else the params file)",
                 lambda v: {"localization_node": {"mode": v}} if v else {}),
        Argument("save_map", "", "teach mode: map file written on ~/save_map and at shutdown",
                 lambda v: {"localization_node": {"save_map_path": v}} if v else {}),
        Argument("use_gpu", "true", "run the network on CUDA when available",
                 lambda v: {"localization_node": {"device": "auto" if _truthy(v) else "cpu"}}),
        Argument("frontend", "", "network (learned, dense matching) | orb ('' = params file)",
                 lambda v: {"localization_node": {"frontend": v}} if v else {}),
        Argument("model", "", "network checkpoint ('' = params file: the packaged model)",
                 lambda v: {"localization_node": {"model_path": v}} if v else {}),
        Argument("publish_uncertified", "", "true: also publish uncertified poses ('' = params file)",
                 lambda v: {"localization_node": {"publish_uncertified": _truthy(v)}} if v else {}),
        _autostart("localization_node"),
    )),
    "keypoints": ((KEYPOINT, REGISTRATION), _COMMON + (
        Argument("map", "", "keyframe map (.npz): localize in it (mode map); '' = visual odometry",
                 lambda v: {"registration_node": {"mode": "map", "map_path": v}} if v else {}),
        Argument("use_gpu", "true", "run the keypoint network on CUDA when available",
                 lambda v: {"keypoint_node": {"device": "auto" if _truthy(v) else "cpu"}}),
        Argument("frontend", "", "keypoint front end: orb | network ('' = params file)",
                 lambda v: {"keypoint_node": {"frontend": v}} if v else {}),
        Argument("model", "", "network checkpoint for frontend network ('' = params file)",
                 lambda v: {"keypoint_node": {"model_path": v}} if v else {}),
        Argument("publish_uncertified", "", "true: also publish uncertified poses ('' = params file)",
                 lambda v: {"registration_node": {"publish_uncertified": _truthy(v)}} if v else {}),
        _autostart("keypoint_node", "registration_node"),
    )),
    "train": ((TRAINER,), _COMMON + (
        Argument("teach", "", "comma-separated teach bags ('' = params file)",
                 lambda v: {"trainer_node": {"teach_bags": _csv(v)}} if v else {}),
        Argument("repeat", "", "comma-separated repeat bags, one per teach bag ('' = params file)",
                 lambda v: {"trainer_node": {"repeat_bags": _csv(v)}} if v else {}),
        Argument("base_model", "", "checkpoint to fine-tune ('' = params file)",
                 lambda v: {"trainer_node": {"base_model": v}} if v else {}),
        Argument("epochs", "", "training epochs ('' = params file)",
                 lambda v: {"trainer_node": {"epochs": _int("epochs")(v)}} if v else {}),
        Argument("output", "", "fine-tuned checkpoint path ('' = params file)",
                 lambda v: {"trainer_node": {"output": v}} if v else {}),
        Argument("autostart", "true", "start training at launch (else call ~/start)",
                 lambda v: {"trainer_node": {"autostart": _truthy(v)}}),
    )),
}


def arguments(launch: str) -> tuple[Argument, ...]:
    if launch not in LAUNCHES:
        raise ValueError(f"unknown launch {launch!r}; known: {sorted(LAUNCHES)}")
    return LAUNCHES[launch][1]


def parse_assignments(items: list[str]) -> dict[str, str]:
    """``["map:=x.npz", "use_gpu:=false"]`` -> dict (the ``ros2 launch`` argument syntax)."""
    out = {}
    for item in items:
        if ":=" not in item:
            raise ValueError(f"launch arguments look like name:=value, got {item!r}")
        k, v = item.split(":=", 1)
        out[k.strip()] = v
    return out


def plan(launch: str, args: dict[str, str] | None = None) -> list[NodeLaunch]:
    """Nodes of ``launch`` with parameters resolved from ``args`` (unknown names are errors)."""
    from .params import config_path

    args = dict(args or {})
    known = {a.name: a for a in arguments(launch)}
    unknown = sorted(set(args) - set(known))
    if unknown:
        raise ValueError(f"unknown launch arguments {unknown} for {launch!r}; known: {sorted(known)}")
    values = {name: args.get(name, a.default) for name, a in known.items()}
    overrides: dict[str, dict[str, Any]] = {}
    for name, a in known.items():
        for node, params in a.to_params(values[name]).items():
            overrides.setdefault(node, {}).update(params)
    extra = [values["params_file"]] if values["params_file"] else []
    return [NodeLaunch(entry, values["namespace"], [str(config_path(c)) for c in entry.configs] + extra,
                       overrides.get(entry.name, {}))
            for entry in LAUNCHES[launch][0]]


def launch_description(launch: str):
    """The launch_ros description of ``launch`` (the launch files are one call to this).

    ``launch``/``launch_ros`` are imported here, not at module level, so the pip-only bringup
    (``sdpr-loc launch``) works where they are not installed.
    """
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    def nodes(context, *args, **kwargs):
        values = {a.name: LaunchConfiguration(a.name).perform(context) for a in arguments(launch)}
        return [Node(package=PACKAGE, executable=n.entry.executable, name=n.entry.name,
                     namespace=n.namespace or None, parameters=n.parameters(),
                     remappings=list(n.entry.remappings), output="screen", emulate_tty=True)
                for n in plan(launch, values)]

    return LaunchDescription(
        [DeclareLaunchArgument(a.name, default_value=a.default, description=a.description)
         for a in arguments(launch)] + [OpaqueFunction(function=nodes)])
