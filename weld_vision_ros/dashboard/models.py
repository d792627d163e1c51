"""The model screen's actions over the registry: list, compare, promote, delete, deploy
to the running ONNX node, and roll back to the model deployed before the current one.

Deploys go through `weld_training.deploy.deploy` (the code `weld-train deploy` runs): it
stages the file in the node's models_dir, sets model_path + model_sha256 atomically and
records the node's answer, refusal reason included, in the registry. Only models whose
file lies inside the configured models or runs folder are deployed from the page.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from weld_training.registry import ModelRecord, Registry, RegistryError

from .paths import Folders, is_inside

DEPLOY_EVENT = 'deploy_accepted'


class ModelActionError(ValueError):
    """A model action the registry or the configured folders refuse."""


def model_fields(m: ModelRecord) -> dict[str, Any]:
    scalars = {k: v for k, v in m.metrics.items() if isinstance(v, (int, float))}
    return {'version': m.version, 'status': m.status, 'run_id': m.run_id, 'created_at': m.created_at,
            'sha256': m.sha256, 'file_name': Path(m.onnx_path).name, 'class_names': list(m.class_names),
            'metrics': scalars, 'per_class': m.metrics.get('per_class', {}),
            'deployed_to': m.deployed_to, 'deployed_at': m.deployed_at,
            'dataset_sha256': m.dataset_sha256}


class ModelActions:
    """deploy_fn(version, registry, node) -> DeployResult-like (accepted, reason, model_path)."""

    def __init__(self, folders: Folders, node: str = '/onnx_defect_node',
                 deploy_fn: Optional[Callable[..., Any]] = None, deploy_timeout_s: float = 30.0) -> None:
        self.folders = folders
        self.node = node if node.startswith('/') else '/' + node
        self._deploy_fn = deploy_fn
        self._deploy_timeout_s = deploy_timeout_s
        self._deploy_lock = threading.Lock()   # one deploy at a time

    def registry(self) -> Registry:
        return Registry(self.folders.registry)

    def list_models(self) -> list[dict[str, Any]]:
        return [model_fields(m) for m in self.registry().list_models()]

    def compare(self, versions: Sequence[str]) -> dict[str, Any]:
        if len(versions) < 2:
            raise ModelActionError(f'compare needs two or more versions, got {len(versions)}')
        reg = self.registry()
        models = [reg.get_model(v) for v in versions]
        scalar_keys = sorted({k for m in models for k, v in m.metrics.items() if isinstance(v, (int, float))})
        classes: list[str] = []
        for m in models:
            classes += [c for c in m.metrics.get('per_class', {}) if c not in classes]
        rows = [{'metric': k, 'values': [m.metrics.get(k) for m in models]} for k in scalar_keys]
        for c in classes:
            for stat in ('precision', 'recall', 'f1'):
                rows.append({'metric': f'{c} {stat}',
                             'values': [m.metrics.get('per_class', {}).get(c, {}).get(stat) for m in models]})
        return {'versions': [m.version for m in models], 'rows': rows}

    def promote(self, version: str) -> dict[str, Any]:
        return model_fields(self.registry().promote(version))

    def delete(self, version: str) -> dict[str, Any]:
        reg = self.registry()
        model = reg.get_model(version)
        # Only files inside the configured folders are deleted from the page.
        files = [p for p in (model.onnx_path, *model.artifacts) if p]
        outside = [p for p in files if not (is_inside(self.folders.models, Path(p))
                                            or is_inside(self.folders.runs, Path(p)))]
        removed = reg.delete_model(version, delete_files=not outside)
        return {'deleted': version, 'removed_files': [Path(p).name for p in removed],
                'kept_files_outside_folders': [str(Path(p).name) for p in outside]}

    def deploy(self, version: str) -> dict[str, Any]:
        """The node's answer: {'accepted': bool, 'reason': str, ...}. Raises ModelActionError
        when the deploy cannot be attempted (node down, file outside the folders)."""
        reg = self.registry()
        model = reg.get_model(version)
        path = Path(model.onnx_path)
        if not (is_inside(self.folders.models, path) or is_inside(self.folders.runs, path)):
            raise ModelActionError(f'model {version}: its file lies outside the configured models and '
                                   'runs folders; deploy it with weld-train deploy instead')
        from weld_training.deploy import DeployError, deploy
        fn = self._deploy_fn or deploy
        if not self._deploy_lock.acquire(blocking=False):
            raise ModelActionError('another deploy is in progress')
        try:
            result = fn(version, reg, node=self.node, timeout_s=self._deploy_timeout_s)
        except DeployError as exc:
            raise ModelActionError(str(exc)) from None
        finally:
            self._deploy_lock.release()
        return {'version': version, 'node': self.node, 'accepted': bool(result.accepted),
                'reason': result.reason, 'file_name': Path(result.model_path).name}

    def deploy_history(self) -> list[str]:
        """Versions accepted by this node, oldest first (consecutive repeats merged)."""
        out: list[str] = []
        for e in self.registry().events():
            if e['kind'] == DEPLOY_EVENT and (e['detail'] or '').split(':')[0] == self.node:
                if not out or out[-1] != e['version']:
                    out.append(e['version'])
        return out

    def rollback(self) -> dict[str, Any]:
        """Deploy the model the node served before the current one."""
        history = self.deploy_history()
        if len(history) < 2:
            raise ModelActionError(f'nothing to roll back to: {self.node} has accepted '
                                   f'{len(history)} deploy(s) from this registry')
        current = history[-1]
        reg = self.registry()
        for previous in reversed(history[:-1]):
            if previous == current:
                continue
            try:
                reg.get_model(previous)
            except RegistryError:
                continue                 # deleted since: try the one before
            result = self.deploy(previous)
            return {**result, 'rolled_back_from': current}
        raise ModelActionError(f'no earlier model of {self.node} is still registered')
