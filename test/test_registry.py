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


def test_runs_and_models_resolve_by_prefix_and_record_their_provenance(tmp_path):
    reg = Registry(tmp_path / 'r.sqlite')
    with pytest.raises(RegistryError, match='no runs recorded'):
        reg.resolve_run()
    first = reg.create_run({'seed': 0}, 'manifest-sha', run_id='run-a-1')
    reg.create_run({'seed': 1}, run_id='run-b-1')
    reg.create_run({'seed': 2}, run_id='run-b-2')
    assert reg.resolve_run().run_id == 'run-b-2' and reg.resolve_run('latest').run_id == 'run-b-2'
    assert reg.resolve_run('run-a').run_id == first
    with pytest.raises(RegistryError, match="matches 2 runs"):
        reg.resolve_run('run-b')
    with pytest.raises(RegistryError, match='unknown run'):
        reg.resolve_run('zzz')
    for status in ('finished', 'interrupted'):
        reg.finish_run('run-b-1', status, detail='why')
    with pytest.raises(RegistryError, match='ends as one of'):
        reg.finish_run(first, 'running')
    assert reg.events()[-1]['detail'] == 'why'

    cfg = {'model': {'name': 'resnet18'}, 'train': {'epochs': 3}}
    model = reg.register_model('resnet18-rgbd-abc', _model_file(tmp_path, 'm'), 'ab' * 32, CLASSES,
                               _metrics(0.9, 0.6), run_id=first, dataset_sha256='manifest-sha', config=cfg)
    assert (model.run_id, model.dataset_sha256, model.config, model.status) == \
        (first, 'manifest-sha', cfg, 'registered')
    assert model.created_at > 0 and model.metrics['per_class']['porosity']['f1'] == 0.6
    assert reg.resolve_model('resnet18').version == model.version      # version prefix
    assert reg.resolve_model('abababab').version == model.version      # sha256 prefix
    assert reg.find_model_by_file(tmp_path / '.' / 'm.onnx', 'ab' * 32).version == model.version
    with pytest.raises(RegistryError, match='unknown run'):
        reg.register_model('x', tmp_path / 'x.onnx', 'sha', CLASSES, {}, run_id='no-such-run')


def test_an_older_registry_file_gains_the_new_columns(tmp_path):
    import sqlite3
    path = tmp_path / 'old.sqlite'
    con = sqlite3.connect(path)
    con.executescript("""
        CREATE TABLE models (version TEXT PRIMARY KEY, run_id TEXT, created_at REAL NOT NULL,
            status TEXT NOT NULL, onnx_path TEXT NOT NULL, sha256 TEXT NOT NULL,
            class_names_json TEXT NOT NULL, metrics_json TEXT NOT NULL DEFAULT '{}',
            artifacts_json TEXT NOT NULL DEFAULT '[]', deployed_to TEXT NOT NULL DEFAULT '',
            deployed_at REAL);
        INSERT INTO models VALUES ('old', NULL, 1.0, 'active', '/m.onnx', 'sha', '["good"]', '{}', '[]', '', NULL);
    """)
    con.commit()
    con.close()
    reg = Registry(path)
    old = reg.get_model('old')
    assert (old.status, old.dataset_sha256, old.config) == ('active', '', {})
    reg.register_model('new', tmp_path / 'n.onnx', 'sha2', CLASSES, {}, dataset_sha256='d')
    assert reg.get_model('new').dataset_sha256 == 'd'
