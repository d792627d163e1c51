"""Training jobs started from the dashboard: `weld-train pipeline` as a separate process.

A job trains on a dataset folder named inside the configured datasets folder, or on bags
named inside the bags folder (extracted into the run folder first); then, unless
cancelled, it evaluates the best checkpoint on the test split (eval/report.json: the
per-class table and confusion matrix the page shows), exports it to ONNX inside the run
folder and registers it, so the model screen can deploy it. It writes its run folder
inside the runs folder; overrides are `key=value` config updates
(`weld-train --set`), except keys that name files, which only the folders above may
decide. Progress, ETA and curves come from the run's own records: the registry row the
trainer updates each epoch (epoch, metrics, ETA, status) and its TensorBoard scalars
(loss every 10 steps, validation metrics each epoch), then history.json once it ends.
Cancel asks through the registry, as `weld-train cancel` does: the trainer stops after its
current step, saves last.pt and ends as cancelled. A job whose run record does not exist
yet (still loading) is interrupted with SIGINT instead.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from weld_training.registry import Registry, RegistryError, RunRecord

from .paths import Folders, check_name, inside, is_inside

# Config keys that name files or folders: never set from the page.
PATH_KEYS = ('output_dir', 'registry', 'data.dataset', 'data.bags', 'data.label_file', 'model.weights',
             'train.resume')
MAX_EPOCHS = 1000
LOG_TAIL_LINES = 40


class JobError(ValueError):
    """A job request that cannot be carried out (bad option, unknown job, not running)."""


SOURCES = ('dataset', 'bags')


@dataclass(frozen=True)
class JobRequest:
    dataset: str = ''                  # a folder name inside Folders.datasets (source 'dataset')
    source: str = 'dataset'
    bags: tuple[str, ...] = ()         # bag names inside Folders.bags (source 'bags')
    model: str = 'mobilenet_v3_small'
    epochs: int = 10
    channels: str = 'rgbd'
    overrides: tuple[str, ...] = ()    # 'key=value', as weld-train --set
    name: str = ''                     # the run folder's name (default: job-<time>)

    def check(self) -> None:
        if self.source not in SOURCES:
            raise JobError(f"source must be one of {', '.join(SOURCES)}, got {self.source!r}")
        if self.source == 'dataset':
            check_name(self.dataset, 'dataset')
        else:
            if not self.bags:
                raise JobError('a job from bags needs at least one bag')
            for bag in self.bags:
                check_name(bag, 'bag')
        if self.name:
            check_name(self.name, 'job name')
        if not 1 <= int(self.epochs) <= MAX_EPOCHS:
            raise JobError(f'epochs must be in 1..{MAX_EPOCHS}, got {self.epochs}')
        if self.channels not in ('rgb', 'rgbd'):
            raise JobError(f"channels must be 'rgb' or 'rgbd', got {self.channels!r}")
        if not self.model.replace('_', '').isalnum():
            raise JobError(f'model must be a model name such as mobilenet_v3_small, got {self.model!r}')
        for item in self.overrides:
            key, sep, _ = item.partition('=')
            key = key.strip()
            if not sep or not key:
                raise JobError(f'override {item!r}: expected key=value (e.g. train.lr=0.001)')
            if key in PATH_KEYS or any(key.startswith(p + '.') for p in PATH_KEYS):
                raise JobError(f'override {key!r} names a file or folder; the dashboard sets those '
                               f'itself (path keys: {", ".join(PATH_KEYS)})')


@dataclass
class Job:
    job_id: str
    request: JobRequest
    run_dir: Path
    command: list[str]
    proc: subprocess.Popen
    started_at: float
    log_path: Path
    cancel_sent: str = ''
    run_id: str = ''


class TrainingJobs:
    """Start, follow and cancel `weld-train train` processes."""

    def __init__(self, folders: Folders, python: str = sys.executable,
                 extra_env: Optional[dict[str, str]] = None) -> None:
        self.folders = folders
        self.python = python
        self.extra_env = dict(extra_env or {})
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def registry(self) -> Registry:
        return Registry(self.folders.registry)

    # --- datasets ------------------------------------------------------------------------
    def datasets(self) -> list[dict[str, Any]]:
        """Dataset folders (those with a manifest) inside the datasets folder."""
        base = Path(self.folders.datasets)
        if not base.is_dir():
            return []
        out = []
        for d in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith('.')):
            manifest = d / 'manifest.json'
            if not manifest.is_file():
                continue
            info: dict[str, Any] = {'name': d.name}
            try:
                data = json.loads(manifest.read_text())
                stats = data.get('stats', {})
                info['class_counts'] = stats.get('per_class', {})
                info['frames'] = stats.get('frames')
                info['created_utc'] = data.get('created_utc', '')
            except (OSError, ValueError):
                info['problem'] = 'manifest.json is not readable JSON'
            out.append(info)
        return out

    def bags(self) -> list[dict[str, Any]]:
        """Recorded bags (folders with a metadata.yaml) inside the bags folder."""
        base = self.folders.bags
        if base is None or not Path(base).is_dir():
            return []
        return [{'name': d.name} for d in sorted(Path(base).iterdir())
                if d.is_dir() and not d.name.startswith('.') and (d / 'metadata.yaml').is_file()]

    # --- jobs -------------------------------------------------------------------------------
    def build_command(self, request: JobRequest, run_dir: Path) -> list[str]:
        """The weld-train command line of a checked request, every path from the folders."""
        if request.source == 'dataset':
            dataset = inside(self.folders.datasets, request.dataset, 'dataset')
            if not dataset.is_dir():
                raise JobError(f'no dataset {request.dataset!r} in {self.folders.datasets}; known: '
                               f'{", ".join(d["name"] for d in self.datasets()) or "none"}')
            if not (dataset / 'manifest.json').is_file():
                raise JobError(f'{request.dataset!r} is not a dataset folder (no manifest.json; '
                               '`weld-train extract` writes one)')
            head = ['pipeline', '--dataset', str(dataset), '--reuse-dataset']
        else:
            if self.folders.bags is None:
                raise JobError('this dashboard has no bags folder (--bags-dir)')
            bags = [inside(self.folders.bags, b, 'bag') for b in request.bags]
            missing = [b.name for b in bags if not (b / 'metadata.yaml').is_file()]
            if missing:
                raise JobError(f'no bag {", ".join(missing)} in {self.folders.bags}; known: '
                               f'{", ".join(b["name"] for b in self.bags()) or "none"}')
            head = ['pipeline', *map(str, bags), '--dataset', str(run_dir / 'dataset')]
        command = [self.python, '-m', 'weld_training.cli', *head, '--output-dir', str(run_dir),
                   '--model', request.model, '--channels', request.channels, '--epochs',
                   str(int(request.epochs)), '--registry', str(self.folders.registry), '--no-progress']
        for item in request.overrides:
            command += ['--set', item.strip()]
        return command

    def start(self, request: JobRequest) -> Job:
        request.check()
        name = request.name or time.strftime('job-%Y%m%d-%H%M%S')
        Path(self.folders.runs).mkdir(parents=True, exist_ok=True)
        run_dir = inside(self.folders.runs, name, 'job name')
        with self._lock:
            if run_dir.exists() or name in self._jobs:
                raise JobError(f'a run folder named {name!r} exists already in {self.folders.runs}')
            command = self.build_command(request, run_dir)
            run_dir.mkdir(parents=True)
            log_path = run_dir / 'dashboard_job.log'
            env = dict(os.environ, PYTHONUNBUFFERED='1', **self.extra_env)
            with open(log_path, 'w') as log:
                proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                        start_new_session=True)
            job = Job(name, request, run_dir, command, proc, time.time(), log_path)
            self._jobs[name] = job
        return job

    def get(self, job_id: str) -> Job:
        with self._lock:
            if job_id not in self._jobs:
                raise JobError(f'unknown job {job_id!r}; jobs: {", ".join(self._jobs) or "none"}')
            return self._jobs[job_id]

    def _run_of(self, job: Job, registry: Registry) -> Optional[RunRecord]:
        if job.run_id:
            try:
                return registry.get_run(job.run_id)
            except RegistryError:
                return None
        for run in reversed(registry.list_runs()):
            if run.run_dir and Path(run.run_dir).resolve() == job.run_dir.resolve():
                job.run_id = run.run_id
                return run
        return None

    def cancel(self, job_id: str) -> dict[str, Any]:
        job = self.get(job_id)
        if job.proc.poll() is not None:
            raise JobError(f'job {job_id} is not running (exit code {job.proc.returncode})')
        registry = self.registry()
        run = self._run_of(job, registry)
        if run is not None and run.status == 'running':
            registry.request_cancel(run.run_id)
            job.cancel_sent = 'registry'
            return {'job_id': job_id, 'run_id': run.run_id, 'how': 'registry',
                    'detail': 'cancel requested: the trainer stops after its current step and saves last.pt'}
        os.killpg(job.proc.pid, signal.SIGINT)   # still starting: no run record to flag yet
        job.cancel_sent = 'sigint'
        return {'job_id': job_id, 'run_id': '', 'how': 'sigint',
                'detail': 'the job had not started training yet: interrupted'}

    def describe(self, job: Job, registry: Optional[Registry] = None, curves: bool = False) -> dict[str, Any]:
        registry = registry or self.registry()
        run = self._run_of(job, registry)
        code = job.proc.poll()
        out: dict[str, Any] = {
            'job_id': job.job_id, 'source': job.request.source, 'dataset': job.request.dataset,
            'bags': list(job.request.bags), 'model': job.request.model,
            'epochs': job.request.epochs, 'overrides': list(job.request.overrides),
            'run_id': job.run_id, 'started_at': job.started_at, 'process_running': code is None,
            'exit_code': code, 'cancel_sent': job.cancel_sent,
        }
        out.update(run_fields(run) if run else {'status': 'starting' if code is None else 'failed',
                                                'epoch': 0, 'total_epochs': job.request.epochs,
                                                'eta_s': None, 'metrics': {}})
        if code is not None and run is not None and run.status == 'running':
            out['status'] = 'failed'    # the process died without ending its run
        if curves:
            out['curves'] = read_curves(job.run_dir)
            out['log_tail'] = _tail(job.log_path, LOG_TAIL_LINES)
            out['report'] = read_report(job.run_dir)
        return out

    def list_jobs(self) -> list[dict[str, Any]]:
        """The dashboard's jobs and every other run of the registry inside the runs folder."""
        registry = self.registry()
        with self._lock:
            jobs = list(self._jobs.values())
        out = [self.describe(j, registry) for j in jobs]
        mine = {j.run_id for j in jobs if j.run_id}
        for run in registry.list_runs():
            if run.run_id not in mine:
                out.append({'job_id': '', 'run_id': run.run_id, 'process_running': None, **run_fields(run)})
        return sorted(out, key=lambda d: d.get('started_at') or d.get('created_at') or 0, reverse=True)

    def run_detail(self, run_id: str) -> dict[str, Any]:
        """A run of the registry with curves and report, if its folder is inside the runs folder."""
        registry = self.registry()
        run = registry.get_run(run_id)
        with self._lock:
            for job in self._jobs.values():
                if job.run_id == run_id:
                    return self.describe(job, registry, curves=True)
        out = {'job_id': '', 'run_id': run.run_id, **run_fields(run)}
        if run.run_dir and is_inside(self.folders.runs, Path(run.run_dir)):
            out['curves'] = read_curves(Path(run.run_dir))
            out['report'] = read_report(Path(run.run_dir))
        else:
            out['curves'] = {}
            out['report'] = None
            out['note'] = 'the run folder lies outside the configured runs folder: not read'
        return out

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Interrupt the jobs still running (they save last.pt) when the dashboard stops."""
        with self._lock:
            jobs = [j for j in self._jobs.values() if j.proc.poll() is None]
        for job in jobs:
            try:
                os.killpg(job.proc.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
        for job in jobs:
            try:
                job.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                job.proc.kill()
                job.proc.wait()


def run_fields(run: RunRecord) -> dict[str, Any]:
    metrics = {k: v for k, v in run.metrics.items() if isinstance(v, (int, float, str))}
    return {'status': run.status, 'epoch': run.epoch, 'total_epochs': run.total_epochs,
            'eta_s': run.eta_s, 'metrics': metrics, 'per_class_f1': run.metrics.get('per_class_f1', {}),
            'created_at': run.created_at, 'updated_at': run.updated_at, 'run_dir_name': Path(run.run_dir).name,
            'cancel_requested': run.cancel_requested,
            'progress': (run.epoch / run.total_epochs) if run.total_epochs else 0.0}


CURVE_TAGS = ('train/loss_step', 'train/loss', 'val/loss', 'val/accuracy', 'val/macro_f1',
              'val/balanced_accuracy')


def read_curves(run_dir: Path) -> dict[str, list[tuple[float, float]]]:
    """tag -> [(step or epoch, value)], from history.json when the run ended, else from the
    run's TensorBoard events (as far as the trainer has flushed them)."""
    history = run_dir / 'history.json'
    curves: dict[str, list[tuple[float, float]]] = {}
    tb = run_dir / 'tb'
    if tb.is_dir():
        try:
            from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
            acc = EventAccumulator(str(tb), size_guidance={'scalars': 0})
            acc.Reload()
            have = set(acc.Tags().get('scalars', []))
            for tag in CURVE_TAGS:
                if tag in have:
                    curves[tag] = [(float(e.step), float(e.value)) for e in acc.Scalars(tag)]
        except Exception:  # noqa: BLE001 - a half-written event file: show what there is
            pass
    if history.is_file():
        try:
            epochs = json.loads(history.read_text()).get('epochs', [])
        except (OSError, ValueError):
            epochs = []
        for key, tag in (('train_loss', 'train/loss'), ('val_loss', 'val/loss'),
                         ('val_accuracy', 'val/accuracy'), ('val_macro_f1', 'val/macro_f1'),
                         ('val_balanced_accuracy', 'val/balanced_accuracy')):
            points = [(float(e['epoch']), float(e[key])) for e in epochs if key in e]
            if points:
                curves[tag] = points
    return curves


def read_report(run_dir: Path) -> Optional[dict[str, Any]]:
    """The run's evaluation report (eval/report.json of `weld-train evaluate`), if any."""
    for candidate in (run_dir / 'eval' / 'report.json', run_dir / 'report.json'):
        if candidate.is_file():
            try:
                data = json.loads(candidate.read_text())
            except (OSError, ValueError):
                return None
            metrics = data.get('metrics', data)      # weld-train evaluate: {title, context, metrics}
            keep = ('samples', 'accuracy', 'macro_f1', 'balanced_accuracy', 'roc_auc_macro', 'per_class',
                    'confusion_matrix', 'class_names')
            out = {k: metrics[k] for k in keep if k in metrics}
            out['split'] = data.get('context', {}).get('split', '')
            return out
    return None


def _tail(path: Path, lines: int) -> list[str]:
    try:
        return path.read_text(errors='replace').splitlines()[-lines:]
    except OSError:
        return []
