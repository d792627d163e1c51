"""Registry of training runs and model versions, in one SQLite file.

Records each run (config, dataset manifest hash, live progress, status) and each model
version (artifacts, sha256, metrics, status), plus an event log (promotions, deploys
accepted or refused, deletions). Several processes may write at once: the database runs
in WAL mode, every write is one `BEGIN IMMEDIATE` transaction, and writers wait for the
lock instead of failing.
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence

DEFAULT_REGISTRY = Path('runs') / 'registry.sqlite'
# interrupted: Ctrl-C; cancelled: `weld-train cancel`; failed: an exception stopped the run.
RUN_STATUSES = ('running', 'finished', 'failed', 'cancelled', 'interrupted')
MODEL_STATUSES = ('registered', 'active', 'retired')

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    status TEXT NOT NULL,
    config_json TEXT NOT NULL,
    dataset_sha256 TEXT NOT NULL DEFAULT '',
    run_dir TEXT NOT NULL DEFAULT '',
    epoch INTEGER NOT NULL DEFAULT 0,
    total_epochs INTEGER NOT NULL DEFAULT 0,
    metrics_json TEXT NOT NULL DEFAULT '{}',
    eta_s REAL,
    pid INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS models (
    version TEXT PRIMARY KEY,
    run_id TEXT REFERENCES runs(run_id),
    created_at REAL NOT NULL,
    status TEXT NOT NULL,
    onnx_path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    class_names_json TEXT NOT NULL,
    metrics_json TEXT NOT NULL DEFAULT '{}',
    artifacts_json TEXT NOT NULL DEFAULT '[]',
    deployed_to TEXT NOT NULL DEFAULT '',
    deployed_at REAL,
    dataset_sha256 TEXT NOT NULL DEFAULT '',
    config_json TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    version TEXT,
    run_id TEXT,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
"""
# Columns added after the first release: (table, column, definition), added to older files.
_MIGRATIONS = (('models', 'dataset_sha256', "TEXT NOT NULL DEFAULT ''"),
               ('models', 'config_json', "TEXT NOT NULL DEFAULT '{}'"),
               ('models', 'pending_to', "TEXT NOT NULL DEFAULT ''"))


class RegistryError(RuntimeError):
    """A registry request that cannot be carried out (unknown version, active model...)."""


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    created_at: float
    updated_at: float
    status: str
    config: dict
    dataset_sha256: str
    run_dir: str
    epoch: int
    total_epochs: int
    metrics: dict
    eta_s: Optional[float]
    pid: Optional[int]
    cancel_requested: bool


@dataclass(frozen=True)
class ModelRecord:
    version: str
    run_id: Optional[str]
    created_at: float
    status: str
    onnx_path: str
    sha256: str
    class_names: tuple[str, ...]
    metrics: dict
    artifacts: tuple[str, ...]
    deployed_to: str
    deployed_at: Optional[float]
    dataset_sha256: str = ''
    config: dict = None
    pending_to: str = ''    # a node asked to serve it that had not answered (see record_deploy_pending)


class Registry:
    """The registry file at `path` (created on first use)."""

    def __init__(self, path: os.PathLike | str = DEFAULT_REGISTRY, timeout_s: float = 60.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._timeout_s = timeout_s
        with self._file_errors(), self._connect() as con:
            con.execute('PRAGMA journal_mode=WAL')
            con.executescript(_SCHEMA)
            for table, column, definition in _MIGRATIONS:
                have = {r['name'] for r in con.execute(f'PRAGMA table_info({table})')}
                if column not in have:
                    con.execute(f'ALTER TABLE {table} ADD COLUMN {column} {definition}')

    @contextmanager
    def _file_errors(self) -> Iterator[None]:
        """SQLite's errors (a corrupt or foreign file, a locked one) as a RegistryError naming the file."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            raise RegistryError(f'registry {self.path} cannot be used: {exc} (a corrupt file, or not a '
                                f'registry; move it aside or name another with --registry)') from None

    # --- plumbing ----------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=self._timeout_s, isolation_level=None)
        con.row_factory = sqlite3.Row
        con.execute(f'PRAGMA busy_timeout={int(self._timeout_s * 1000)}')
        con.execute('PRAGMA foreign_keys=ON')
        return con

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken with the write lock up front (no upgrade deadlocks)."""
        with self._file_errors():
            con = self._connect()
            try:
                con.execute('BEGIN IMMEDIATE')
                yield con
                con.execute('COMMIT')
            except BaseException:
                if con.in_transaction:
                    con.execute('ROLLBACK')
                raise
            finally:
                con.close()

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._file_errors():
            con = self._connect()
            try:
                return con.execute(sql, args).fetchall()
            finally:
                con.close()

    def _event(self, con: sqlite3.Connection, kind: str, *, version: str = None,
               run_id: str = None, detail: str = '') -> None:
        con.execute('INSERT INTO events(at, version, run_id, kind, detail) VALUES (?,?,?,?,?)',
                    (time.time(), version, run_id, kind, detail))

    # --- runs --------------------------------------------------------------------------
    def create_run(self, config: Mapping[str, Any], dataset_sha256: str = '', run_dir: str = '',
                   total_epochs: int = 0, run_id: Optional[str] = None) -> str:
        run_id = run_id or time.strftime('run-%Y%m%d-%H%M%S-') + uuid.uuid4().hex[:6]
        now = time.time()
        with self._write() as con:
            con.execute('INSERT INTO runs(run_id, created_at, updated_at, status, config_json, '
                        'dataset_sha256, run_dir, total_epochs, pid) VALUES (?,?,?,?,?,?,?,?,?)',
                        (run_id, now, now, 'running', json.dumps(dict(config), sort_keys=True,
                                                                  default=str),
                         dataset_sha256, str(run_dir), int(total_epochs), os.getpid()))
            self._event(con, 'run_started', run_id=run_id)
        return run_id

    def update_progress(self, run_id: str, epoch: int, metrics: Mapping[str, Any],
                        eta_s: Optional[float] = None) -> None:
        with self._write() as con:
            cur = con.execute('UPDATE runs SET epoch=?, metrics_json=?, eta_s=?, updated_at=? '
                              'WHERE run_id=?', (int(epoch), json.dumps(dict(metrics), default=float),
                                                 eta_s, time.time(), run_id))
            if cur.rowcount == 0:
                raise RegistryError(f'unknown run {run_id!r}')

    def finish_run(self, run_id: str, status: str = 'finished', detail: str = '') -> None:
        """End a run with a final status; `detail` (e.g. the error of a failed run) goes to the events."""
        if status not in RUN_STATUSES or status == 'running':
            raise RegistryError(f'a run ends as one of {", ".join(RUN_STATUSES[1:])}, got {status!r}')
        with self._write() as con:
            cur = con.execute('UPDATE runs SET status=?, updated_at=?, eta_s=NULL WHERE run_id=?',
                              (status, time.time(), run_id))
            if cur.rowcount == 0:
                raise RegistryError(f'unknown run {run_id!r}')
            self._event(con, f'run_{status}', run_id=run_id, detail=detail)

    def request_cancel(self, run_id: str) -> None:
        """Ask a running training to stop after its current step (it checkpoints first)."""
        run = self.get_run(run_id)
        if run.status != 'running':
            raise RegistryError(f'run {run_id} is {run.status}, not running')
        with self._write() as con:
            con.execute('UPDATE runs SET cancel_requested=1, updated_at=? WHERE run_id=?',
                        (time.time(), run_id))
            self._event(con, 'cancel_requested', run_id=run_id)

    def cancel_requested(self, run_id: str) -> bool:
        rows = self._read('SELECT cancel_requested FROM runs WHERE run_id=?', (run_id,))
        return bool(rows and rows[0]['cancel_requested'])

    def get_run(self, run_id: str) -> RunRecord:
        rows = self._read('SELECT * FROM runs WHERE run_id=?', (run_id,))
        if not rows:
            raise RegistryError(f'unknown run {run_id!r}')
        return _run(rows[0])

    def resolve_run(self, text: Optional[str] = None) -> RunRecord:
        """A run by id or unique id prefix; None or 'latest': the most recently created run."""
        if not text or text == 'latest':
            rows = self._read('SELECT * FROM runs ORDER BY created_at DESC LIMIT 1')
            if not rows:
                raise RegistryError(f'no runs recorded in {self.path}')
            return _run(rows[0])
        rows = [r for r in self._read('SELECT * FROM runs ORDER BY created_at')
                if r['run_id'].startswith(text)]
        exact = [r for r in rows if r['run_id'] == text]
        if exact or len(rows) == 1:
            return _run((exact or rows)[0])
        if not rows:
            raise RegistryError(f'unknown run {text!r} in {self.path}')
        raise RegistryError(f'{text!r} matches {len(rows)} runs: {", ".join(r["run_id"] for r in rows)}')

    def list_runs(self, status: Optional[str] = None) -> list[RunRecord]:
        if status:
            rows = self._read('SELECT * FROM runs WHERE status=? ORDER BY created_at', (status,))
        else:
            rows = self._read('SELECT * FROM runs ORDER BY created_at')
        return [_run(r) for r in rows]

    # --- models ------------------------------------------------------------------------
    def register_model(self, version: str, onnx_path: os.PathLike | str, sha256: str,
                       class_names: Sequence[str], metrics: Mapping[str, Any],
                       run_id: Optional[str] = None, artifacts: Sequence[str] = (),
                       dataset_sha256: str = '', config: Optional[Mapping[str, Any]] = None) -> ModelRecord:
        """Record a model version: its ONNX file (sha256 of the file, as the node checks it),
        evaluation metrics (overall and `per_class`), the files deleting it removes
        (`artifacts`), the run and dataset manifest it came from, and the training config."""
        if not version:
            raise RegistryError('a model version must not be empty')
        with self._write() as con:
            if con.execute('SELECT 1 FROM models WHERE version=?', (version,)).fetchone():
                raise RegistryError(f'model version {version!r} is already registered')
            if run_id and not con.execute('SELECT 1 FROM runs WHERE run_id=?', (run_id,)).fetchone():
                raise RegistryError(f'unknown run {run_id!r} (a model can only name a run of this registry)')
            con.execute('INSERT INTO models(version, run_id, created_at, status, onnx_path, sha256, '
                        'class_names_json, metrics_json, artifacts_json, dataset_sha256, config_json) '
                        'VALUES (?,?,?,?,?,?,?,?,?,?,?)',
                        (version, run_id, time.time(), 'registered', str(onnx_path), sha256,
                         json.dumps(list(class_names)), json.dumps(dict(metrics), default=float),
                         json.dumps([str(a) for a in artifacts]), dataset_sha256,
                         json.dumps(dict(config or {}), sort_keys=True, default=str)))
            self._event(con, 'model_registered', version=version, run_id=run_id)
        return self.get_model(version)

    def get_model(self, version: str) -> ModelRecord:
        rows = self._read('SELECT * FROM models WHERE version=?', (version,))
        if not rows:
            known = [r['version'] for r in self._read('SELECT version FROM models ORDER BY created_at')]
            raise RegistryError(f'unknown model version {version!r}; registered: '
                                f'{", ".join(known) or "none"}')
        return _model(rows[0])

    def resolve_model(self, text: str) -> ModelRecord:
        """A model by version, unique version prefix, or sha256 prefix (>= 8 hex digits)."""
        models = self.list_models()
        for match in (lambda m: m.version == text, lambda m: m.version.startswith(text),
                      lambda m: len(text) >= 8 and m.sha256.startswith(text.lower())):
            found = [m for m in models if match(m)]
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                raise RegistryError(f'{text!r} matches {len(found)} models: '
                                    f'{", ".join(m.version for m in found)}')
        return self.get_model(text)  # raises, listing the registered versions

    def find_model_by_file(self, path: os.PathLike | str, sha256: str) -> Optional[ModelRecord]:
        """The registered model whose ONNX file is `path` (resolved) with this sha256, if any."""
        target = Path(path).resolve()
        for m in self.list_models():
            if m.sha256 == sha256 and Path(m.onnx_path).resolve() == target:
                return m
        return None

    def list_models(self) -> list[ModelRecord]:
        return [_model(r) for r in self._read('SELECT * FROM models ORDER BY created_at')]

    def active_model(self) -> Optional[ModelRecord]:
        rows = self._read("SELECT * FROM models WHERE status='active'")
        return _model(rows[0]) if rows else None

    def promote(self, version: str) -> ModelRecord:
        """Make `version` the active model (the previous active one is retired)."""
        self.get_model(version)
        with self._write() as con:
            con.execute("UPDATE models SET status='retired' WHERE status='active'")
            con.execute("UPDATE models SET status='active' WHERE version=?", (version,))
            self._event(con, 'promoted', version=version)
        return self.get_model(version)

    def record_deploy(self, version: str, target: str, accepted: bool, reason: str = '') -> None:
        """Record a node's answer to a deploy. Accepted: the model is the one `target` serves
        (deployed_to), and no other model is recorded as served there or pending there any more.
        Refused: a pending deploy of it to `target` is settled; what the node serves is unchanged."""
        self.get_model(version)
        with self._write() as con:
            if accepted:
                con.execute("UPDATE models SET deployed_to='' WHERE deployed_to=? AND version<>?",
                            (target, version))
                con.execute("UPDATE models SET pending_to='' WHERE pending_to=?", (target,))
                con.execute('UPDATE models SET deployed_to=?, deployed_at=? WHERE version=?',
                            (target, time.time(), version))
            else:
                con.execute("UPDATE models SET pending_to='' WHERE version=? AND pending_to=?", (version, target))
            self._event(con, 'deploy_accepted' if accepted else 'deploy_refused', version=version,
                        detail=f'{target}: {reason}' if reason else target)

    def record_deploy_pending(self, version: str, target: str, reason: str) -> None:
        """Record a deploy whose answer did not come: `target` may or may not serve `version`
        (it may still be validating it) until `weld-train models reconcile` reads back what it serves."""
        self.get_model(version)
        with self._write() as con:
            con.execute('UPDATE models SET pending_to=? WHERE version=?', (target, version))
            self._event(con, 'deploy_pending', version=version, detail=f'{target}: {reason}')

    def record_not_served(self, version: str, target: str, reason: str) -> None:
        """Record that `target` no longer serves `version` (read back from it)."""
        with self._write() as con:
            con.execute("UPDATE models SET deployed_to='' WHERE version=? AND deployed_to=?", (version, target))
            self._event(con, 'deploy_not_served', version=version, detail=f'{target}: {reason}')

    def served_by(self, target: str) -> Optional[ModelRecord]:
        """The model the registry records as served by `target` (its last accepted deploy)."""
        rows = self._read('SELECT * FROM models WHERE deployed_to=? ORDER BY deployed_at DESC', (target,))
        return _model(rows[0]) if rows else None

    def pending_on(self, target: str) -> list[ModelRecord]:
        return [_model(r) for r in self._read('SELECT * FROM models WHERE pending_to=?', (target,))]

    def delete_model(self, version: str, delete_files: bool = True) -> list[str]:
        """Remove a version and (by default) its files; the active model is refused."""
        model = self.get_model(version)
        if model.status == 'active':
            raise RegistryError(f'model {version} is the active model; promote another one '
                                'before deleting it')
        removed = []
        if delete_files:
            for p in {model.onnx_path, *model.artifacts}:
                path = Path(p)
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                    removed.append(str(path))
                elif path.exists():
                    path.unlink()
                    removed.append(str(path))
        with self._write() as con:
            con.execute('DELETE FROM models WHERE version=?', (version,))
            self._event(con, 'deleted', version=version, detail=', '.join(removed))
        return removed

    def events(self, version: Optional[str] = None) -> list[dict]:
        if version:
            rows = self._read('SELECT * FROM events WHERE version=? ORDER BY id', (version,))
        else:
            rows = self._read('SELECT * FROM events ORDER BY id')
        return [dict(r) for r in rows]

    def compare(self, versions: Sequence[str]) -> str:
        """A side-by-side Markdown table of the versions' metrics, overall and per class."""
        models = [self.get_model(v) for v in versions]
        header = '| metric | ' + ' | '.join(m.version for m in models) + ' |'
        lines = [header, '|---' * (len(models) + 1) + '|']
        scalar_keys = sorted({k for m in models for k, v in m.metrics.items()
                              if isinstance(v, (int, float))})
        for key in scalar_keys:
            lines.append(f'| {key} | ' + ' | '.join(_fmt(m.metrics.get(key)) for m in models) + ' |')
        classes = []
        for m in models:
            for c in m.metrics.get('per_class', {}):
                if c not in classes:
                    classes.append(c)
        for c in classes:
            for stat in ('precision', 'recall', 'f1'):
                vals = [m.metrics.get('per_class', {}).get(c, {}).get(stat) for m in models]
                lines.append(f'| {c} {stat} | ' + ' | '.join(_fmt(v) for v in vals) + ' |')
        return '\n'.join(lines)


def _fmt(v: Any) -> str:
    if v is None:
        return '-'
    return f'{v:.4f}' if isinstance(v, float) else str(v)


def _run(r: sqlite3.Row) -> RunRecord:
    return RunRecord(r['run_id'], r['created_at'], r['updated_at'], r['status'],
                     json.loads(r['config_json']), r['dataset_sha256'], r['run_dir'], r['epoch'],
                     r['total_epochs'], json.loads(r['metrics_json']), r['eta_s'], r['pid'],
                     bool(r['cancel_requested']))


def _model(r: sqlite3.Row) -> ModelRecord:
    return ModelRecord(r['version'], r['run_id'], r['created_at'], r['status'], r['onnx_path'],
                       r['sha256'], tuple(json.loads(r['class_names_json'])),
                       json.loads(r['metrics_json']), tuple(json.loads(r['artifacts_json'])),
                       r['deployed_to'], r['deployed_at'], r['dataset_sha256'],
                       json.loads(r['config_json']), r['pending_to'])
