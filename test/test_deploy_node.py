"""`weld-train deploy` against the real ONNX defect node, each in its own process.

The node starts serving a test model (weld-v1) from a temporary models_dir while this
process publishes camera frames to it. `weld-train deploy` (a subprocess, as a user runs
it) sends a freshly trained and exported model: the node accepts it and its verdicts carry
the new model_version. A corrupt model file is refused with the node's reason, the new
model keeps serving, and the registry records both answers.
"""
import subprocess
import sys
import time

import pytest

from test.helpers.onnx_models import write_model
from test.helpers.training_toy import make_toy_dataset, toy_train_config
from test.rosutil import REPO, ros_context, spawn_node, spin_until, stop
from test.test_onnx_node import Rig
from weld_training.registry import Registry

pytestmark = pytest.mark.ros

NODE = '/onnx_defect_node'


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """A toy model trained for one epoch and exported by the CLI code (registered)."""
    import torch

    from weld_training import cli, train
    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp('deploy')
    ds = make_toy_dataset(root, n_per_class=4, frames_per_weld=5)
    registry = root / 'registry.sqlite'
    cfg = toy_train_config(ds, root / 'run', epochs=1, tensorboard=False, precise_bn_batches=2)
    summary = train.main(cfg, log=lambda s: None, registry=registry)
    exported = cli.cmd_export(summary['best_checkpoint'], out=str(root / 'export' / 'model.onnx'),
                              version='toy-deploy-1', parity_samples=4, registry=str(registry))
    assert exported['registered'] == 'toy-deploy-1'
    return root, registry


def deploy(*args, registry, ex=None, timeout_s=120.0) -> tuple[int, str]:
    """Run `weld-train deploy ...` in its own process; keep this process's executor spinning
    meanwhile, so the camera keeps publishing through the swap."""
    proc = subprocess.Popen([sys.executable, '-m', 'weld_training.cli', 'deploy', *map(str, args),
                             '--registry', str(registry)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        if ex is not None:
            spin_until(ex, lambda: proc.poll() is not None, timeout_s)
        out, _ = proc.communicate(timeout=timeout_s)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out


def test_deploy_to_a_running_node_and_a_corrupt_model_is_refused(trained, tmp_path):
    root, registry = trained
    models_dir = tmp_path / 'models'
    models_dir.mkdir()
    write_model(models_dir / 'v1.onnx', 'weld-v1')
    exported = root / 'export' / 'model.onnx'
    corrupt = tmp_path / 'corrupt.onnx'
    corrupt.write_bytes(exported.read_bytes()[:len(exported.read_bytes()) // 2])  # a truncated copy

    proc = spawn_node('weld_vision_ros.nodes.onnx_defect_node',
                      {'models_dir': str(models_dir), 'model_path': 'v1.onnx', 'mode': 'ml',
                       'image_reliability': 'reliable', 'image_queue_depth': 100},
                      log_path=tmp_path / 'onnx_node.log')
    try:
        with ros_context() as (node, ex):
            rig = Rig(node, ex)
            rig.wait_ready(timeout_s=60.0)
            assert spin_until(ex, lambda: any(m[0].model_version == 'weld-v1' for m in rig.final.values()),
                              20.0)

            rc, out = deploy('toy-deploy', '--node', NODE, '--timeout', 60, registry=registry, ex=ex)
            assert rc == 0, out + (tmp_path / 'onnx_node.log').read_text()[-2000:]
            assert f'{NODE} accepted toy-deploy-1' in out
            first_after = rig._i
            assert spin_until(ex, lambda: any(info['i'] >= first_after and s in rig.final
                                              for s, info in rig.sent.items()), 30.0)
            after = [rig.final[s][0] for s, info in rig.sent.items() if info['i'] >= first_after and s in rig.final]
            assert {m.model_version for m in after} == {'toy-deploy-1'}

            rc, out = deploy(corrupt, '--node', NODE, '--timeout', 60, registry=registry, ex=ex)
            assert rc == 1, out
            assert f'{NODE} refused corrupt-' in out and 'ONNX' in out and 'toy-deploy-1 keeps serving' in out
            first_after = rig._i
            assert spin_until(ex, lambda: sum(1 for s, info in rig.sent.items()
                                              if info['i'] >= first_after and s in rig.final) >= 3, 30.0)
            after = [rig.final[s][0] for s, info in rig.sent.items() if info['i'] >= first_after and s in rig.final]
            assert {m.model_version for m in after} == {'toy-deploy-1'}  # the old model keeps serving
            assert {m.method for m in after} == {'ml'}

            # A node that is not there: a clear error, not a hang.
            t0 = time.monotonic()
            rc, out = deploy('toy-deploy-1', '--node', '/no_such_node', '--timeout', 3, registry=registry)
            assert rc == 2 and 'no service /no_such_node/get_parameters: is /no_such_node running' in out, out
            assert time.monotonic() - t0 < 60
    finally:
        stop(proc)

    reg = Registry(registry)
    model = reg.get_model('toy-deploy-1')
    assert model.deployed_to == NODE and model.deployed_at
    assert 'deploy_accepted' in [e['kind'] for e in reg.events('toy-deploy-1')]
    (bad,) = [m for m in reg.list_models() if m.version.startswith('corrupt-')]
    refusal = [e for e in reg.events(bad.version) if e['kind'] == 'deploy_refused']
    assert len(refusal) == 1 and 'ONNX' in refusal[0]['detail'] and refusal[0]['detail'].startswith(NODE)
    assert (models_dir / 'toy-deploy-1.onnx').is_file()  # staged into the node's models_dir
    assert not (models_dir / f'{bad.version}.onnx').exists()  # a refused copy is removed again


def test_deploy_without_ros_says_so(trained, monkeypatch):
    from weld_training.deploy import DeployError, deploy as deploy_fn
    _, registry = trained
    monkeypatch.setitem(sys.modules, 'rclpy', None)  # as if rclpy were not installed
    with pytest.raises(DeployError, match='deploy needs ROS 2 \\(rclpy\\)'):
        deploy_fn('toy-deploy-1', Registry(registry))


def _active_model_watch(node):
    """The latest ~/active_model JSON the node published (latched), as a one-element list."""
    import json

    from std_msgs.msg import String

    from weld_vision_ros.ros.qos import latched_qos
    latest = [{}]
    node.create_subscription(String, f'{NODE}/active_model', lambda m: latest.__setitem__(0, json.loads(m.data)),
                             latched_qos())
    return latest


def test_a_deploy_that_outlasts_its_timeout_is_recorded_as_what_the_node_serves(tmp_path, monkeypatch):
    """The node takes 6 s to validate a model. `--timeout 4`: no answer to the set, but the
    read-back (answered once the set is decided) finds the model serving: accepted, recorded.
    `--timeout 1`: the read-back times out too: exit 3, recorded as pending (not as the old
    model), and `models reconcile` records the model the node went on to serve."""
    from weld_training.deploy import file_sha256

    registry = tmp_path / 'registry.sqlite'
    models_dir = tmp_path / 'models'
    models_dir.mkdir()
    write_model(models_dir / 'v1.onnx', 'weld-v1')
    v2 = write_model(tmp_path / 'v2.onnx', 'weld-v2', seed=2)
    v3 = write_model(tmp_path / 'v3.onnx', 'weld-v3', seed=3)
    monkeypatch.setenv('WELD_TEST_LOAD_DELAY_S', '6')
    proc = spawn_node('test.helpers.slow_onnx_node', {'models_dir': str(models_dir), 'model_path': 'v1.onnx',
                                                     'mode': 'ml'}, log_path=tmp_path / 'onnx_node.log')
    try:
        with ros_context() as (node, ex):
            active = _active_model_watch(node)
            assert spin_until(ex, lambda: active[0].get('version') == 'weld-v1', 60.0), \
                (tmp_path / 'onnx_node.log').read_text()[-2000:]

            rc, out = deploy(v2, '--node', NODE, '--timeout', 4, registry=registry)
            assert rc == 0, out
            assert 'did not answer within 4.0 s' in out and 'read back: it serves this model' in out
            assert spin_until(ex, lambda: active[0].get('version') == 'weld-v2', 10.0)
            reg = Registry(registry)
            assert reg.served_by(NODE).version == 'weld-v2' and not reg.pending_on(NODE)
            assert [e['kind'] for e in reg.events('weld-v2')][-2:] == ['deploy_pending', 'deploy_accepted']

            rc, out = deploy(v3, '--node', NODE, '--timeout', 1, registry=registry)
            assert rc == 3, out
            assert 'recorded as pending' in out and 'models reconcile' in out
            assert [m.version for m in reg.pending_on(NODE)] == ['weld-v3']
            # The node goes on to serve it...
            assert spin_until(ex, lambda: active[0].get('version') == 'weld-v3', 30.0)
            assert active[0]['sha256'] == file_sha256(v3)
            # ... and reconciling records that.
            rc = subprocess.run([sys.executable, '-m', 'weld_training.cli', 'models', 'reconcile', '--node', NODE,
                                 '--timeout', '30', '--registry', str(registry)],
                                cwd=REPO, capture_output=True, text=True)
            assert rc.returncode == 0, rc.stdout + rc.stderr
            assert f'{NODE} serves weld-v3' in rc.stdout
    finally:
        stop(proc)
    reg = Registry(registry)
    assert reg.served_by(NODE).version == 'weld-v3' and not reg.pending_on(NODE)
    assert reg.get_model('weld-v2').deployed_to == ''      # no longer recorded as served there


def _upload(node, ex, file_name, data, sha, activate=False):
    from test.rosutil import call_service
    from weld_vision_ros.srv import UploadModel
    req = UploadModel.Request(file_name=file_name, sha256=sha, activate=activate)
    req.data = data
    return call_service(node, ex, UploadModel, f'{NODE}/upload_model', req, timeout_s=60.0)


def test_deploy_remote_sends_the_bytes_and_a_bad_upload_never_replaces_a_good_model(tmp_path):
    """The node's models_dir is its own (as on another host): `deploy --remote` sends the file's
    bytes and sha256 over ~/upload_model; the node writes them there once validated and serves
    them. Damaged, oversize, misnamed or invalid uploads are refused, models_dir unchanged."""
    import hashlib

    from weld_training.deploy import file_sha256
    registry = tmp_path / 'registry.sqlite'
    models_dir = tmp_path / 'cell_models'
    models_dir.mkdir()
    write_model(models_dir / 'v1.onnx', 'weld-v1')
    outside = tmp_path / 'desktop'
    outside.mkdir()
    v2 = write_model(outside / 'v2.onnx', 'weld-v2', seed=2)
    corrupt = outside / 'corrupt.onnx'
    corrupt.write_bytes(v2.read_bytes()[:len(v2.read_bytes()) // 2])
    proc = spawn_node('weld_vision_ros.nodes.onnx_defect_node',
                      {'models_dir': str(models_dir), 'model_path': 'v1.onnx', 'mode': 'ml', 'max_model_mb': 1.0},
                      log_path=tmp_path / 'onnx_node.log')
    try:
        with ros_context() as (node, ex):
            active = _active_model_watch(node)
            assert spin_until(ex, lambda: active[0].get('version') == 'weld-v1', 60.0), \
                (tmp_path / 'onnx_node.log').read_text()[-2000:]

            rc, out = deploy(v2, '--node', NODE, '--remote', '--timeout', 60, registry=registry)
            assert rc == 0, out + (tmp_path / 'onnx_node.log').read_text()[-2000:]
            assert f'{NODE} accepted weld-v2: now serving {models_dir / "weld-v2.onnx"}' in out
            assert file_sha256(models_dir / 'weld-v2.onnx') == file_sha256(v2)
            assert spin_until(ex, lambda: active[0].get('version') == 'weld-v2', 10.0)
            assert Registry(registry).served_by(NODE).version == 'weld-v2'

            rc, out = deploy(corrupt, '--node', NODE, '--remote', '--timeout', 60, registry=registry)
            assert rc == 1 and 'upload refused, model weld-v2 keeps serving' in out and 'ONNX' in out, out

            data = v2.read_bytes()
            sha = hashlib.sha256(data).hexdigest()
            refusals = [
                ('x.onnx', data[:-1] + bytes([data[-1] ^ 0xFF]), sha, 'damaged in transit'),
                ('../escape.onnx', data, sha, 'plain file name'),
                ('v1.onnx', data, sha, 'already holds another file'),
                ('big.onnx', data + bytes(1_000_001), hashlib.sha256(data + bytes(1_000_001)).hexdigest(),
                 'more than max_model_mb'),
            ]
            for name, payload, digest, reason in refusals:
                answer = _upload(node, ex, name, payload, digest, activate=True)
                assert not answer.accepted and reason in answer.reason, (name, answer.reason)
            # Stored without serving it, then the same bytes again: idempotent.
            for _ in range(2):
                answer = _upload(node, ex, 'spare.onnx', data, sha)
                assert answer.accepted and answer.model_path == str(models_dir / 'spare.onnx'), answer.reason
            ex.spin_once(timeout_sec=0.5)
            assert active[0].get('version') == 'weld-v2'
    finally:
        stop(proc)
    assert sorted(p.name for p in models_dir.iterdir()) == ['spare.onnx', 'v1.onnx', 'weld-v2.onnx']
    assert not (tmp_path / 'escape.onnx').exists()
    reg = Registry(registry)
    (bad,) = [m for m in reg.list_models() if m.version.startswith('corrupt-')]
    assert [e['kind'] for e in reg.events(bad.version)][-1] == 'deploy_refused'
    assert reg.served_by(NODE).version == 'weld-v2'
