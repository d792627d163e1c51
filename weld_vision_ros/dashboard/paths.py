"""The folders the dashboard may touch, and names resolved inside them only.

The page never sends a file path: it names a dataset, a run or a model, and the name is
resolved inside the configured folder. `inside()` refuses anything that would leave it
(`..`, an absolute path, a symlink pointing out), so no request can reach another file.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

NAME_PATTERN = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$')


class PathNotAllowed(ValueError):
    """A name that is not a plain name, or that resolves outside its configured folder."""


@dataclass(frozen=True)
class Folders:
    """datasets: dataset folders (`weld-train extract` output) training may read;
    runs: where training jobs write their run folders;
    models: model files (the registry's exports) deploys are staged from;
    registry: the registry file (runs/registry.sqlite by default);
    bags: recorded bags (the capture node's bag_dir) a job may extract a dataset from."""

    datasets: Path
    runs: Path
    models: Path
    registry: Path
    bags: Optional[Path] = None

    def resolved(self) -> 'Folders':
        fix = lambda p: Path(p).expanduser().resolve()  # noqa: E731
        return Folders(fix(self.datasets), fix(self.runs), fix(self.models), fix(self.registry),
                       fix(self.bags) if self.bags is not None else None)


def check_name(name: str, what: str = 'name') -> str:
    """A plain file or folder name (letters, digits, . _ -; no separators, not hidden)."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name) or name in ('.', '..'):
        raise PathNotAllowed(f'{what} {name!r} is not a plain name (letters, digits, ".", "_", "-"; '
                             'up to 128 characters, not starting with "." or "-")')
    return name


def inside(folder: Path, name: str, what: str = 'name') -> Path:
    """folder/name, resolved, refused unless it lies inside `folder` (symlinks followed)."""
    check_name(name, what)
    base = Path(folder).resolve()
    path = (base / name).resolve()
    try:
        path.relative_to(base)
    except ValueError:
        raise PathNotAllowed(f'{what} {name!r} resolves outside {base}') from None
    return path


def is_inside(folder: Path, path: Path) -> bool:
    try:
        Path(path).resolve().relative_to(Path(folder).resolve())
        return True
    except ValueError:
        return False
