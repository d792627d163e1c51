"""Deploy a registered model to a running ONNX defect node through its parameter service.

The node validates every model before it serves it (metadata contract, shapes, warm-up
inference, sha256, models directory) and answers the parameter set with the reason when
it refuses; the previous model keeps serving. This module asks the node for its models
directory, copies the model there when it is not inside yet, sets `model_path` and
`model_sha256` in one atomic request, reports the node's answer and records it in the
registry.

rclpy is imported only when a deploy runs: `weld_training` stays importable without ROS.
"""
from __future__ import annotations

import hashlib
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .registry import ModelRecord, Registry, RegistryError

DEFAULT_NODE = '/onnx_defect_node'


class DeployError(RuntimeError):
    """The deploy could not be attempted (node unreachable, file missing, ROS absent)."""


@dataclass(frozen=True)
class DeployResult:
    version: str
    node: str
    accepted: bool
    reason: str
    model_path: str


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

        from weld_vision_ros.core.model_contract import ModelContract
        proto = onnx.load(str(path), load_external_data=False)
        return ModelContract.from_metadata({p.key: p.value for p in proto.metadata_props})
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


def deploy(version: str, registry: Registry, node: str = DEFAULT_NODE,
           models_dir: Optional[Path] = None, timeout_s: float = 30.0) -> DeployResult:
    """Deploy `version` to `node` and record the node's answer in the registry."""
    model = registry.get_model(version)
    try:
        import rclpy
        from rcl_interfaces.srv import GetParameters, SetParametersAtomically
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.parameter import Parameter
    except ImportError as exc:
        raise DeployError(f'deploy needs ROS 2 (rclpy) in this environment: {exc}') from None

    node = node if node.startswith('/') else '/' + node
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    client_node = rclpy.create_node(f'weld_deploy_{int(time.time() * 1000) % 1_000_000}', context=ctx)
    # An executor of this context: the global one belongs to the default context, never initialized here.
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(client_node)
    try:
        def call(srv_type, name, request):
            client = client_node.create_client(srv_type, name)
            if not client.wait_for_service(timeout_sec=timeout_s):
                raise DeployError(f'no service {name}: is {node} running (and on this ROS_DOMAIN_ID)?')
            future = client.call_async(request)
            executor.spin_until_future_complete(future, timeout_sec=timeout_s)
            if not future.done() or future.result() is None:
                raise DeployError(f'{name} did not answer within {timeout_s} s')
            return future.result()

        if models_dir is None:
            answer = call(GetParameters, f'{node}/get_parameters',
                          GetParameters.Request(names=['models_dir']))
            models_dir = Path(answer.values[0].string_value) if answer.values else None
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
        request = SetParametersAtomically.Request(parameters=[
            Parameter('model_sha256', value=sha).to_parameter_msg(),
            Parameter('model_path', value=str(staged)).to_parameter_msg()])
        result = call(SetParametersAtomically, f'{node}/set_parameters_atomically', request).result
    finally:
        executor.shutdown()
        client_node.destroy_node()
        rclpy.try_shutdown(context=ctx)
    registry.record_deploy(version, node, bool(result.successful), result.reason)
    if not result.successful and new_copy:
        staged.unlink(missing_ok=True)  # a refused model has no business in the node's models_dir
    return DeployResult(version, node, bool(result.successful), result.reason, str(staged))
