"""Where the package's shared files (config/, models/, launch/) live, with or without ROS."""
from __future__ import annotations

import sys
from pathlib import Path

PACKAGE = "sdpr_loc"


def share_path(*parts: str) -> Path:
    """A file of the package's share directory: the source checkout when running from one, else the
    installed ``share/sdpr_loc`` (colcon: through the ament index; pip: under the venv prefix)."""
    repo = Path(__file__).resolve().parents[1]
    if (repo / "package.xml").is_file() and (repo / parts[0]).exists():
        return repo.joinpath(*parts)
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory(PACKAGE)).joinpath(*parts)
    except Exception:  # noqa: BLE001 - not installed with an ament index: use the venv prefix
        return Path(sys.prefix, "share", PACKAGE, *parts)
