"""Model registry: runs, versions, compare, promote, delete, concurrent writers (no ROS)."""
import multiprocessing as mp
from pathlib import Path

import pytest

from weld_training.registry import Registry, RegistryError

CLASSES = ('good', 'porosity')


def _metrics(f1_good, f1_por):
    return {'macro_f1': (f1_good + f1_por) / 2, 'accuracy': 0.9,
            'per_class': {'good': {'precision': 0.9, 'recall': 0.8, 'f1': f1_good},
                          'porosity': {'precision': 0.7, 'recall': 0.6, 'f1': f1_por}}}


def _model_file(tmp_path: Path, name: str) -> Path:
    p = tmp_path / f'{name}.onnx'
    p.write_bytes(b'not really onnx, the registry does not care')
    return p


def test_run_lifecycle_progress_and_cancel(tmp_path):
    reg = Registry(tmp_path / 'r.sqlite')
    run = reg.create_run({'model': 'mobilenet_v3_small', 'epochs': 5}, 'abc', total_epochs=5)
    reg.update_progress(run, 2, {'val_macro_f1': 0.5}, eta_s=30.0)
    rec = reg.get_run(run)
    assert (rec.status, rec.epoch, rec.total_epochs, rec.eta_s) == ('running', 2, 5, 30.0)
    assert rec.config['model'] == 'mobilenet_v3_small' and rec.metrics['val_macro_f1'] == 0.5
    assert not reg.cancel_requested(run)
    reg.request_cancel(run)
    assert reg.cancel_requested(run)
    reg.finish_run(run, 'cancelled')
    with pytest.raises(RegistryError, match='not running'):
        reg.request_cancel(run)
    with pytest.raises(RegistryError, match='unknown run'):
        reg.update_progress('nope', 1, {})


def test_models_list_compare_promote_delete(tmp_path):
    reg = Registry(tmp_path / 'r.sqlite')
    a = _model_file(tmp_path, 'a')
    b = _model_file(tmp_path, 'b')
    reg.register_model('v1', a, 'sha-a', CLASSES, _metrics(0.9, 0.5))
    reg.register_model('v2', b, 'sha-b', CLASSES, _metrics(0.95, 0.8), artifacts=[str(b)])
    assert [m.version for m in reg.list_models()] == ['v1', 'v2']
    with pytest.raises(RegistryError, match='already registered'):
        reg.register_model('v1', a, 'sha-a', CLASSES, {})
    table = reg.compare(['v1', 'v2'])
    assert '| porosity f1 | 0.5000 | 0.8000 |' in table
    assert '| macro_f1 | 0.7000 | 0.8750 |' in table
    reg.promote('v1')
    reg.promote('v2')
    assert reg.active_model().version == 'v2' and reg.get_model('v1').status == 'retired'
    with pytest.raises(RegistryError, match='active model'):
        reg.delete_model('v2')
    assert b.exists()
    removed = reg.delete_model('v1')
    assert removed == [str(a)] and not a.exists()
    with pytest.raises(RegistryError, match="unknown model version 'v1'; registered: v2"):
        reg.get_model('v1')
    reg.record_deploy('v2', '/onnx_defect_node', accepted=False, reason='sha256 mismatch')
    reg.record_deploy('v2', '/onnx_defect_node', accepted=True)
    kinds = [e['kind'] for e in reg.events('v2')]
    assert kinds[-2:] == ['deploy_refused', 'deploy_accepted']
    assert reg.get_model('v2').deployed_to == '/onnx_defect_node'


def _writer(path: str, tag: str, n: int, start) -> None:
    start.wait()
    reg = Registry(path)
    for i in range(n):
        run = reg.create_run({'tag': tag, 'i': i})
        reg.update_progress(run, 1, {'f1': 0.5})
        reg.register_model(f'{tag}-{i}', f'/tmp/{tag}-{i}.onnx', 'sha', CLASSES, {'f1': 0.5}, run_id=run)
        reg.finish_run(run)


def test_two_concurrent_writers_are_both_recorded(tmp_path):
    path = str(tmp_path / 'r.sqlite')
    Registry(path)
    ctx = mp.get_context('spawn')
    start = ctx.Event()
    procs = [ctx.Process(target=_writer, args=(path, tag, 25, start)) for tag in ('a', 'b')]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    reg = Registry(path)
    versions = {m.version for m in reg.list_models()}
    assert versions == {f'{t}-{i}' for t in 'ab' for i in range(25)}
    assert len(reg.list_runs('finished')) == 50
