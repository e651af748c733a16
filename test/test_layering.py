"""Imports point down the layers (ARCHITECTURE): a module never imports from a layer above its own,
and only sdpr_loc/nodes imports rclpy. Parsed with ast, so imports inside functions count too."""
import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "sdpr_loc"
# lower number = lower layer; a module may import its own layer and those below
LAYERS = {"errors": 0, "resources": 0, "argtypes": 0, "files": 0, "certify": 1, "poly": 2, "geometry": 2, "vision": 3, "data": 4,
          "training": 5, "evaluation": 6, "examples": 6, "nodes": 7, "cli": 8, "__init__": 8}


def _imports(path: Path):
    """(line, imported sdpr_loc top-level package or external module) of every import in a file."""
    rel = path.relative_to(PKG).with_suffix("").parts
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:                                        # relative: resolve against the file
                base = rel[:-node.level]
                name = ".".join(("sdpr_loc", *base, *((node.module,) if node.module else ())))
                if not base and not node.module:                  # "from . import x" at top level
                    for a in node.names:
                        yield node.lineno, f"sdpr_loc.{a.name}"
                    continue
                yield node.lineno, name
            else:
                yield node.lineno, node.module or ""


def _layer(path: Path) -> str:
    return path.relative_to(PKG).parts[0].removesuffix(".py")


def test_every_package_has_a_layer():
    missing = {_layer(p) for p in PKG.rglob("*.py")} - set(LAYERS)
    assert not missing, f"add {missing} to LAYERS"


def test_imports_point_down():
    bad = []
    for path in sorted(PKG.rglob("*.py")):
        own = _layer(path)
        for line, mod in _imports(path):
            parts = mod.split(".")
            if parts[0] != "sdpr_loc" or len(parts) < 2:
                continue
            target = parts[1]
            if target in LAYERS and LAYERS[target] > LAYERS[own]:
                bad.append(f"{path.relative_to(PKG)}:{line} ({own}) imports {mod} ({target})")
    assert not bad, "imports from a higher layer:\n" + "\n".join(bad)


def test_only_nodes_import_rclpy_and_ros_messages():
    ros = ("rclpy", "sensor_msgs", "geometry_msgs", "nav_msgs", "diagnostic_msgs", "std_msgs", "std_srvs",
           "builtin_interfaces", "rcl_interfaces", "lifecycle_msgs")
    bad = [f"{p.relative_to(PKG)}:{line} imports {mod}" for p in PKG.rglob("*.py") if _layer(p) != "nodes"
           for line, mod in _imports(p) if mod.split(".")[0] in ros]
    assert not bad, "\n".join(bad)


def test_no_private_name_crosses_modules():
    """``from x import _name`` across modules hides a shared helper: make it public or move it."""
    bad = []
    for path in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                bad += [f"{path.relative_to(PKG)}:{node.lineno} imports {a.name} from {node.module}"
                        for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
    assert not bad, "\n".join(bad)
