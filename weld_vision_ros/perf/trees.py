"""Another commit's files, for tools that run an older version beside this one (the
behaviour comparison in scripts/compare_commits.py, benchmarks/bench_cell_cpu.py)."""
from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path


def export_commit(repo: Path, commit: str, into: Path) -> Path:
    """The files of `commit` of the git checkout `repo`, unpacked under `into/tree` (no work
    tree of the repository is touched); the folder."""
    archive = into / 'tree.tar'
    with open(archive, 'wb') as fh:
        subprocess.run(['git', '-C', str(repo), 'archive', '--format=tar', commit], stdout=fh, check=True)
    tree = into / 'tree'
    tree.mkdir()
    with tarfile.open(archive) as tar:
        tar.extractall(tree, filter='data')
    return tree
