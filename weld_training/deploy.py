"""Deploy a registered model to a running ONNX defect node through its parameter service.

The node validates every model before it serves it (metadata contract, shapes, warm-up
inference, sha256, models directory) and answers the parameter set with the reason when
it refuses; the previous model keeps serving. This module asks the node for its models
directory, copies the model there when it is not inside yet, sets `model_path` and
`model_sha256` in one atomic request, reports the node's answer and records it in the
registry.

The registry and the answer agree in every outcome. A node that does not answer within the
timeout may still be validating the model and serve it a moment later, so the deploy is
recorded as pending and the node's `model_path`/`model_sha256` parameters are read back:
the node's parameter services share one mutually exclusive callback group, so that read is
answered only once the set has been decided, and what it returns is what the node serves.
Without an answer to that either, the deploy stays pending (`state == 'pending'`) until
`reconcile` (`weld-train models reconcile`) reads back what the node serves.

rclpy is imported only when a deploy runs: `weld_training` stays importable without ROS.
"""
from __future__ import annotations

import hashlib
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from .registry import ModelRecord, Registry, RegistryError

DEFAULT_NODE = '/onnx_defect_node'
DISCOVERY_TIMEOUT_S = 15.0   # longest wait for the node's services to be discovered


class DeployError(RuntimeError):
    """The deploy could not be attempted (node unreachable, file missing, ROS absent)."""


class NoAnswer(DeployError):
    """A service the node offers did not answer within the timeout."""


@dataclass(frozen=True)
class DeployResult:
    version: str
    node: str
    accepted: bool
    reason: str
    model_path: str
    state: str = ''        # 'accepted', 'refused' or 'pending' (no answer, nothing read back)
    answered: bool = True  # the node answered the set itself (else: read back, or pending)

    def __post_init__(self) -> None:
        if not self.state:
            object.__setattr__(self, 'state', 'accepted' if self.accepted else 'refused')


@dataclass(frozen=True)
class Served:
    """What a node serves, read back from its parameters."""

    model_path: str
    model_sha256: str


class _NodeClient:
    """Calls to one node's services from a private rclpy context (rclpy imported on use)."""

    def __init__(self, node: str, timeout_s: float) -> None:
        try:
            import rclpy
            from rclpy.executors import SingleThreadedExecutor
        except ImportError as exc:
            raise DeployError(f'deploy needs ROS 2 (rclpy) in this environment: {exc}') from None
        self.node = node if node.startswith('/') else '/' + node
        self.timeout_s = timeout_s
        self._rclpy = rclpy
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx)
        self.client_node = rclpy.create_node(f'weld_deploy_{int(time.time() * 1000) % 1_000_000}',
                                             context=self.ctx)
        # An executor of this context: the global one belongs to the default context, never initialized here.
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.client_node)

    def __enter__(self) -> '_NodeClient':
        return self

    def __exit__(self, *exc) -> None:
        self.executor.shutdown()
        self.client_node.destroy_node()
        self._rclpy.try_shutdown(context=self.ctx)

    def call(self, srv_type, service: str, request, timeout_s: Optional[float] = None):
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        name = f'{self.node}/{service}'
        client = self.client_node.create_client(srv_type, name)
        # Discovery is not an answer: a node just started, or a loaded host, may take a few
        # seconds to be seen; the timeout applies to the node's answer.
        if not client.wait_for_service(timeout_sec=max(timeout_s, DISCOVERY_TIMEOUT_S)):
            raise DeployError(f'no service {name}: is {self.node} running (and on this ROS_DOMAIN_ID)?')
        future = client.call_async(request)
        self.executor.spin_until_future_complete(future, timeout_sec=timeout_s)
        if not future.done() or future.result() is None:
            raise NoAnswer(f'{name} did not answer within {timeout_s} s')
        return future.result()

    def parameters(self, names: list[str]) -> list:
        from rcl_interfaces.srv import GetParameters
        return self.call(GetParameters, 'get_parameters', GetParameters.Request(names=names)).values

    def served(self, slot: tuple[str, str] = ('model_path', 'model_sha256')) -> Served:
        values = self.parameters(list(slot))
        if len(values) != 2:
            raise DeployError(f'{self.node} has no {slot[0]}/{slot[1]} parameters: not an ONNX defect node?')
        return Served(values[0].string_value, values[1].string_value)


def settle(registry: Registry, node: str, served: Served) -> Optional[ModelRecord]:
    """Record in the registry what `node` serves (read back from it): the registered model with
    that sha256 is the one deployed there; deploys still pending there are refused (the node
    serves another model). Returns that model (None: not registered, or no model)."""
    sha = served.model_sha256
    model = next((m for m in registry.list_models() if sha and m.sha256 == sha), None)
    if model is not None:
        recorded = registry.get_model(model.version)
        if recorded.deployed_to != node or recorded.pending_to == node:
            registry.record_deploy(model.version, node, True, 'read back from the node: it serves this model')
    for m in registry.pending_on(node):
        if model is None or m.version != model.version:
            what = f'model {model.version}' if model else (f'unregistered {served.model_path!r} (sha256 {sha[:12]})'
                                                           if served.model_path else 'no model')
            registry.record_deploy(m.version, node, False, f'read back from the node: it serves {what}')
    current = registry.served_by(node)
    if model is None and current is not None:
        registry.record_not_served(current.version, node, 'read back from the node: it no longer serves it')
    return model


def reconcile(registry: Registry, node: str = DEFAULT_NODE, timeout_s: float = 30.0) -> tuple[Served, Optional[ModelRecord]]:
    """Read back what `node` serves and record it in the registry (see `settle`)."""
    with _NodeClient(node, timeout_s) as client:
        served = client.served()
    return served, settle(registry, client.node, served)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def stage_model(onnx_path: Path, models_dir: Path, version: str) -> Path:
    """The model's path inside `models_dir`, copying it there (atomically) when needed."""
    if not onnx_path.is_file():
        raise DeployError(f'model file {onnx_path} does not exist')
    if _inside(onnx_path, models_dir):
        return onnx_path.resolve()
    models_dir.mkdir(parents=True, exist_ok=True)
    target = models_dir / f'{version}.onnx'
    tmp = target.with_suffix('.onnx.partial')
    shutil.copyfile(onnx_path, tmp)
    tmp.replace(target)  # the node never sees a half-copied file
    return target.resolve()


def _contract_of(path: Path):
    """The weld.* contract in an ONNX file's metadata, or None when it cannot be read."""
    try:
        import onnx

        from weld_vision_ros.core.model_contract import KIND_ANOMALY, PREFIX, ModelContract
        proto = onnx.load(str(path), load_external_data=False)
        meta = {p.key: p.value for p in proto.metadata_props}
        if meta.get(PREFIX + 'kind') == KIND_ANOMALY:
            from weld_vision_ros.core.anomaly import AnomalyContract
            c = AnomalyContract.from_metadata(meta)
            return ModelContract(class_names=('anomaly',), preprocess=c.preprocess, input_name=c.input_name,
                                 output_name=c.output_name, output_kind='logits', model_version=c.model_version,
                                 metrics={**c.metrics, 'kind': KIND_ANOMALY})
        return ModelContract.from_metadata(meta)
    except Exception:  # noqa: BLE001 - any unreadable file: the node will say what is wrong
        return None


def resolve_target(registry: Registry, text: str) -> ModelRecord:
    """The model a user named: a registered version (or unique prefix, or sha256 prefix), or an
    ONNX file. A file not yet registered is registered as found (its contract's version, else
    <file stem>-<sha256[:12]>), so the node's answer to it is recorded like any other."""
    try:
        return registry.resolve_model(text)
    except RegistryError:
        path = Path(text)
        if not path.is_file():
            raise
    sha = file_sha256(path)
    known = registry.find_model_by_file(path, sha)
    if known is not None:
        return known
    contract = _contract_of(path)
    version = contract.model_version if contract and contract.model_version else f'{path.stem}-{sha[:12]}'
    versions = {m.version: m for m in registry.list_models()}
    if version in versions:
        if versions[version].sha256 == sha:
            return versions[version]
        version = f'{version}-{sha[:12]}'
        if version in versions:
            return versions[version]
    metrics = dict(contract.metrics) if contract else {}
    return registry.register_model(version, path.resolve(), sha, contract.class_names if contract else (),
                                   metrics)


def upload_name(version: str) -> str:
    """The file name a model version is uploaded under (what UploadModel accepts)."""
    name = re.sub(r'[^A-Za-z0-9._+-]', '_', version).lstrip('._+-') or 'model'
    return f'{name}.onnx'


def deploy(version: str, registry: Registry, node: str = DEFAULT_NODE,
           models_dir: Optional[Path] = None, timeout_s: float = 30.0, remote: bool = False) -> DeployResult:
    """Deploy `version` to `node` and record the node's answer in the registry; without an
    answer in `timeout_s`, read back what the node serves and record that (module docstring).

    remote: send the file's bytes through the node's ~/upload_model service (a node on another
    host: no shared models_dir needed) instead of copying it into models_dir.
    """
    model = registry.get_model(version)
    anomaly = model.metrics.get('kind') == 'anomaly'
    if remote and anomaly:
        raise DeployError(f'{version} is an anomaly model: deploy --remote sends classifiers only; stage it '
                          'into the node\'s models_dir (deploy without --remote)')
    if remote:
        return _deploy_remote(model, registry, node, timeout_s)
    with _NodeClient(node, timeout_s) as client:
        node = client.node
        if models_dir is None:
            answer = client.parameters(['models_dir'])
            models_dir = Path(answer[0].string_value) if answer else None
            if not models_dir or str(models_dir) in ('', '.'):
                raise DeployError(f'{node} reports no models_dir; pass --models-dir')
        target = Path(models_dir) / f'{version}.onnx'
        new_copy = not _inside(Path(model.onnx_path), Path(models_dir)) and not target.exists()
        staged = stage_model(Path(model.onnx_path), Path(models_dir), version)
        sha = file_sha256(staged)
        if model.sha256 and sha != model.sha256:
            reason = (f'{staged} has sha256 {sha[:12]}..., the registry recorded {model.sha256[:12]}...: '
                      f'the file changed since it was registered; not sent to the node')
            registry.record_deploy(version, node, False, reason)
            raise DeployError(reason)
        if anomaly:
            # The anomaly slot: its own parameters, and its own target in the registry, so that
            # the classifier recorded as serving on this node stays recorded.
            result = _set_model(client, registry, version, str(staged), sha,
                                slot=ANOMALY_SLOT, target=node + ANOMALY_TARGET_SUFFIX)
        else:
            result = _set_model(client, registry, version, str(staged), sha)
    if result.state == 'refused' and result.answered and new_copy:
        staged.unlink(missing_ok=True)  # a refused model has no business in the node's models_dir
    return result


def _deploy_remote(model: ModelRecord, registry: Registry, node: str, timeout_s: float) -> DeployResult:
    path = Path(model.onnx_path)
    if not path.is_file():
        raise DeployError(f'model file {path} does not exist')
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    if model.sha256 and sha != model.sha256:
        reason = (f'{path} has sha256 {sha[:12]}..., the registry recorded {model.sha256[:12]}...: '
                  f'the file changed since it was registered; not sent to the node')
        registry.record_deploy(model.version, node if node.startswith('/') else '/' + node, False, reason)
        raise DeployError(reason)
    try:
        from weld_vision_ros.srv import UploadModel
    except ImportError as exc:
        raise DeployError(f'deploy --remote needs the weld_vision_ros messages built (make setup): {exc}') from None
    with _NodeClient(node, timeout_s) as client:
        request = UploadModel.Request(file_name=upload_name(model.version), sha256=sha, activate=True)
        request.data = data
        return _set_model(client, registry, model.version, '', sha,
                          send=lambda: _upload_answer(client.call(UploadModel, 'upload_model', request)))


def _upload_answer(response):
    return _Answer(bool(response.accepted), response.reason, response.model_path)


@dataclass(frozen=True)
class _Answer:
    successful: bool
    reason: str
    model_path: str = ''


ANOMALY_SLOT = ('anomaly_model_path', 'anomaly_model_sha256')
ANOMALY_TARGET_SUFFIX = ':anomaly'     # registry target of a node's anomaly slot


def _set_model(client: _NodeClient, registry: Registry, version: str, path: str, sha: str,
               send: Optional[Callable[[], '_Answer']] = None,
               slot: tuple[str, str] = ('model_path', 'model_sha256'), target: str = '') -> DeployResult:
    """Ask the node to serve the model (a parameter set, or `send`: an upload) and record the outcome."""
    from rcl_interfaces.srv import SetParametersAtomically
    from rclpy.parameter import Parameter

    node = target or client.node
    if send is None:
        request = SetParametersAtomically.Request(parameters=[
            Parameter(slot[1], value=sha).to_parameter_msg(),
            Parameter(slot[0], value=path).to_parameter_msg()])

        def send() -> _Answer:
            result = client.call(SetParametersAtomically, 'set_parameters_atomically', request).result
            return _Answer(bool(result.successful), result.reason, path)
    try:
        answer = send()
        path = answer.model_path or path
    except NoAnswer as exc:
        # It may still be validating the model: pending until read back, never "the previous one".
        registry.record_deploy_pending(version, node, str(exc))
        try:
            served = client.served(slot)    # answered once the set is decided (one exclusive group)
        except NoAnswer as again:
            return DeployResult(version, node, False, f'{exc}; reading back what it serves: {again}', path,
                                state='pending', answered=False)
        settle(registry, node, served)
        if served.model_sha256 == sha:
            return DeployResult(version, node, True, f'{exc}; read back: it serves this model', path,
                                answered=False)
        return DeployResult(version, node, False, f'{exc}; read back: it does not serve this model '
                            f'(model_path {served.model_path!r})', path, answered=False)
    registry.record_deploy(version, node, answer.successful, answer.reason)
    return DeployResult(version, node, answer.successful, answer.reason, path)
