"""Where the package's installed files are: config/ (the parameter YAML, the DDS profile, the
bundled model) and msg/ definitions.

Looked up, in order, in the ament index (a colcon install, or ROS), under the Python
prefix's share/ (a `pip install .`), and last in the checkout the package was imported
from (running from a source tree that was never installed). The first that holds the file
wins; nothing else in the package spells these paths.
"""
from __future__ import annotations

import sys
from pathlib import Path

PACKAGE = 'weld_vision_ros'


class ResourceNotFoundError(FileNotFoundError):
    """A package file that no install and no checkout provides."""


def share_dirs() -> list[Path]:
    """Candidate share folders of the package, in lookup order."""
    dirs: list[Path] = []
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
        try:
            dirs.append(Path(get_package_share_directory(PACKAGE)))
        except PackageNotFoundError:
            pass
    except ImportError:      # no ament index (a plain pip install)
        pass
    dirs.append(Path(sys.prefix) / 'share' / PACKAGE)
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / 'package.xml').is_file():
        dirs.append(checkout)
    return dirs


def resource_path(*parts: str) -> Path:
    """The installed file `share/weld_vision_ros/<parts...>`; raises ResourceNotFoundError."""
    for base in share_dirs():
        path = base.joinpath(*parts)
        if path.exists():
            return path
    tried = ', '.join(str(d) for d in share_dirs())
    raise ResourceNotFoundError(f'{"/".join(parts)} not found in the package share folders ({tried})')


def params_file() -> Path:
    """config/weld_cell.yaml: every node's parameters."""
    return resource_path('config', 'weld_cell.yaml')


def demo_model() -> Path:
    """config/models/weld_demo.onnx: the bundled demo model."""
    return resource_path('config', 'models', 'weld_demo.onnx')


def msg_dir() -> Path:
    """msg/: the package's message definitions (for rosbags' typestore)."""
    return resource_path('msg')
