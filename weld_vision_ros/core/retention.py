"""Retention of what a cell writes (reports, review bags): by age and by total size.

A cell runs for months unattended; its disk must never fill. `prune` keeps a folder's
entries (files or sub-folders, each one report or one bag) within a maximum age and a
maximum total size, deleting the oldest first; the newest entry is never deleted, so
the latest result is always there to read.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RetentionPolicy:
    max_bytes: int = 500 * 2**20
    max_age_s: float = 90 * 86400.0

    def __post_init__(self) -> None:
        if self.max_bytes <= 0 or self.max_age_s <= 0:
            raise ValueError(f'retention limits must be positive, got {self.max_bytes} B and {self.max_age_s} s')


def entry_bytes(path: Path) -> int:
    if path.is_file() or path.is_symlink():
        return path.lstat().st_size
    return sum(p.lstat().st_size for p in path.rglob('*') if p.is_file() and not p.is_symlink())


def prune(folder: str | Path, policy: RetentionPolicy, now_s: float | None = None) -> list[Path]:
    """Delete the oldest entries of `folder` beyond the policy; returns what was deleted."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    now_s = time.time() if now_s is None else now_s
    entries = sorted(((p.lstat().st_mtime, p) for p in folder.iterdir()), key=lambda e: e[0])
    sizes = {p: entry_bytes(p) for _, p in entries}
    total = sum(sizes.values())
    deleted = []
    for i, (mtime, p) in enumerate(entries):
        if i == len(entries) - 1:
            break                                  # never the newest
        if now_s - mtime <= policy.max_age_s and total <= policy.max_bytes:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        total -= sizes[p]
        deleted.append(p)
    return deleted
