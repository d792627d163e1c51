"""The dashboard without ROS: live state, JPEG throttle, folder confinement, job requests,
and the HTTP API (token, registry actions, deploy answers, OpenAPI) through FastAPI's
TestClient with a fake deploy, as a training desktop runs it (no bridge)."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from weld_training.registry import Registry
from weld_vision_ros.dashboard.app import DashboardContext, create_app
from weld_vision_ros.dashboard.live import JpegThrottle, LiveConfig, LiveState
from weld_vision_ros.dashboard.models import ModelActions
from weld_vision_ros.dashboard.paths import Folders, PathNotAllowed, inside
from weld_vision_ros.dashboard.training_jobs import JobError, JobRequest, TrainingJobs, read_curves, read_report

TOKEN = 'test-token-1'
AUTH = {'Authorization': f'Bearer {TOKEN}'}


class FakeClock:
    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def verdict(cls='good', conf=0.9, stamp=1000.0, status='inspected', reason='', **kw):
    return {'stamp_s': stamp, 'defect_class': '' if status == 'not_inspected' else cls, 'confidence': conf,
            'method': 'rule', 'model_version': '', 'latency_ms': 12.0, 'status': status,
            'status_reason': reason, **kw}


# --- live state ------------------------------------------------------------------------
def test_live_state_counts_classes_and_not_inspected_apart_and_says_when_frames_stop():
    clock, wall = FakeClock(), FakeClock(1000.05)
    live = LiveState(LiveConfig(no_frame_after_s=2.0), clock=clock, wall_clock=wall)
    assert live.snapshot()['connection']['state'] == 'waiting'
    for i, cls in enumerate(['good', 'good', 'gap']):
        live.on_verdict(verdict(cls, stamp=1000.0 + i))
    live.on_verdict(verdict(status='not_inspected', reason='no_bead', stamp=1003.0))
    s = live.snapshot()
    assert s['counts'] == {'good': 2, 'gap': 1}
    assert s['not_inspected'] == {'no_bead': 1}
    assert s['verdicts_total'] == 4 and s['connection']['state'] == 'live'
    assert [h['defect_class'] for h in s['history']][:2] == ['', 'gap']  # newest first
    assert s['history'][0]['action'] == 'rescan'                       # never passed
    clock.t += 2.5
    s = live.snapshot()
    assert s['connection']['state'] == 'no_frames' and '2.5 s' in s['connection']['detail']
    json.dumps(s, allow_nan=False)  # JSON-safe: no NaN anywhere


def test_a_stopping_defect_raises_the_alarm_until_acknowledged():
    live = LiveState(clock=FakeClock(), wall_clock=FakeClock(1000.0))
    live.on_verdict(verdict('porosity', conf=0.3))      # below the policy's min confidence: rework
    assert live.snapshot()['alarm'] is None
    live.on_verdict(verdict('crack', conf=0.95, stamp=1001.0))
    alarm = live.snapshot()['alarm']
    assert alarm['defect_class'] == 'crack' and not alarm['acknowledged']
    assert live.acknowledge_alarm() and live.snapshot()['alarm']['acknowledged']


def test_the_anomaly_trend_holds_the_scores_of_verdicts_that_carry_one():
    from types import SimpleNamespace

    from weld_vision_ros.dashboard.bridge import anomaly_fields
    assert anomaly_fields(SimpleNamespace()) == {}                       # a message without the field
    assert anomaly_fields(SimpleNamespace(anomaly_score=-1.0)) == {}      # no anomaly model scored it
    scored = anomaly_fields(SimpleNamespace(anomaly_score=0.6, anomaly_level='inspect',
                                            anomaly_model_version='pc-1'))
    live = LiveState(clock=FakeClock(), wall_clock=FakeClock(1000.0))
    live.on_verdict(verdict(stamp=1000.0))
    live.on_verdict(verdict(stamp=1000.1, **scored))
    trend = live.snapshot()['anomaly_trend']
    assert len(trend) == 1 and trend[0]['score'] == pytest.approx(0.6)


def test_latency_statistics_and_drops_come_from_stamps_and_diagnostics():
    wall = FakeClock(1000.040)
    live = LiveState(clock=FakeClock(), wall_clock=wall)
    live.on_verdict(verdict(stamp=1000.0))
    live.on_diagnostics('/rule_defect_node: rule inspection', 0, 'ok',
                        {'drop.bad_depth_encoding': '3', 'drop.stale': '0', 'latency_p50_ms': 'nan',
                         'ml_invocation_ratio': '0.250', 'mode': 'hybrid'})
    s = live.snapshot()
    assert s['camera_to_verdict_ms']['p50'] == pytest.approx(40.0, abs=1e-3)  # 40 ms in float64 seconds
    assert s['drops'] == {'/rule_defect_node: rule inspection': {'bad_depth_encoding': 3, 'stale': 0}}
    assert s['ml_invocation_ratio'] == 0.25
    values = s['diagnostics']['/rule_defect_node: rule inspection']['values']
    assert values['latency_p50_ms'] is None and values['mode'] == 'hybrid'


def test_jpeg_is_encoded_only_when_asked_and_at_most_at_the_rate_limit():
    clock = FakeClock()
    throttle = JpegThrottle(max_fps=5.0, quality=80, clock=clock)
    assert throttle.latest() == (None, 0)
    img = np.zeros((48, 64, 3), np.uint8)
    img[:, :32] = (255, 0, 0)                   # red left half (RGB)
    for _ in range(10):
        throttle.offer(img)
    assert throttle.encoded == 0                # offers cost no encoding
    jpeg, seq = throttle.latest()
    assert seq == 10 and throttle.encoded == 1
    decoded = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (48, 64, 3) and decoded[24, 8, 2] > 200 and decoded[24, 8, 0] < 60  # BGR
    throttle.offer(img)
    clock.t += 0.1                              # sooner than 1/5 s: the old JPEG again
    assert throttle.latest()[1] == 10 and throttle.encoded == 1
    clock.t += 0.15                             # 0.25 s after the first encoding
    assert throttle.latest()[1] == 11 and throttle.encoded == 2


# --- folders and requests -------------------------------------------------------------------
def test_names_resolve_inside_their_folder_only(tmp_path):
    (tmp_path / 'ds' / 'good').mkdir(parents=True)
    (tmp_path / 'secret').mkdir()
    os.symlink(tmp_path / 'secret', tmp_path / 'ds' / 'link')
    assert inside(tmp_path / 'ds', 'good') == (tmp_path / 'ds' / 'good').resolve()
    for bad in ('..', '../secret', '/etc', 'a/b', '.hidden', '', 'link'):
        with pytest.raises(PathNotAllowed):
            inside(tmp_path / 'ds', bad)


def test_job_requests_refuse_path_overrides_and_bad_options():
    JobRequest('ds', overrides=('train.lr=0.001',)).check()
    for kw, word in (({'overrides': ('output_dir=/tmp/x',)}, 'output_dir'),
                     ({'overrides': ('data.dataset=/etc',)}, 'data.dataset'),
                     ({'overrides': ('model.weights=/w.pt',)}, 'model.weights'),
                     ({'overrides': ('train.lr',)}, 'key=value'),
                     ({'epochs': 0}, 'epochs'), ({'channels': 'rgbx'}, 'channels'),
                     ({'model': 'x; rm -rf /'}, 'model')):
        with pytest.raises(JobError, match=word):
            JobRequest('ds', **kw).check()
    with pytest.raises(PathNotAllowed):
        JobRequest('../ds').check()


def test_jobs_run_the_pipeline_on_a_dataset_or_on_bags_inside_their_folders(tmp_path):
    folders = Folders(tmp_path / 'ds', tmp_path / 'runs', tmp_path / 'models', tmp_path / 'reg.sqlite',
                      tmp_path / 'bags').resolved()
    (tmp_path / 'bags' / 'capture_2').mkdir(parents=True)
    (tmp_path / 'bags' / 'capture_2' / 'metadata.yaml').write_text('rosbag2_bagfile_information: {}')
    (tmp_path / 'bags' / 'recording').mkdir()            # not finished: no metadata.yaml
    jobs = TrainingJobs(folders, python='python3')
    assert jobs.bags() == [{'name': 'capture_2'}]
    run_dir = folders.runs / 'j1'
    cmd = jobs.build_command(JobRequest(source='bags', bags=('capture_2',), epochs=3,
                                        overrides=('train.lr=0.001',)), run_dir)
    assert cmd[:5] == ['python3', '-m', 'weld_training.cli', 'pipeline', str(folders.bags / 'capture_2')]
    assert cmd[cmd.index('--dataset') + 1] == str(run_dir / 'dataset')
    assert cmd[cmd.index('--output-dir') + 1] == str(run_dir) and cmd[-2:] == ['--set', 'train.lr=0.001']
    (folders.datasets / 'ds1').mkdir(parents=True)
    with pytest.raises(JobError, match='no manifest.json'):
        jobs.build_command(JobRequest('ds1'), run_dir)
    (folders.datasets / 'ds1' / 'manifest.json').write_text('{}')
    cmd = jobs.build_command(JobRequest('ds1'), run_dir)
    assert cmd[3:7] == ['pipeline', '--dataset', str(folders.datasets / 'ds1'), '--reuse-dataset']
    with pytest.raises(JobError, match='no bag recording'):
        jobs.build_command(JobRequest(source='bags', bags=('recording',)), run_dir)
    with pytest.raises(PathNotAllowed):
        JobRequest(source='bags', bags=('../etc',)).check()
    with pytest.raises(JobError, match='at least one bag'):
        JobRequest(source='bags').check()


def test_curves_and_the_report_are_read_from_the_runs_records(tmp_path):
    (tmp_path / 'history.json').write_text(json.dumps({'epochs': [
        {'epoch': 1, 'train_loss': 1.5, 'val_macro_f1': 0.2}, {'epoch': 2, 'train_loss': 1.0, 'val_macro_f1': 0.4}]}))
    (tmp_path / 'eval').mkdir()
    (tmp_path / 'eval' / 'report.json').write_text(json.dumps({      # as weld-train evaluate writes it
        'title': 'Evaluation on test', 'context': {'split': 'test', 'checkpoint': '/x/best.pt'},
        'metrics': {'accuracy': 0.5, 'per_class': {'good': {'f1': 0.5}}, 'confusion_matrix': [[1, 1], [0, 2]],
                    'class_names': ['good', 'crack']}}))
    report = read_report(tmp_path)
    assert report['confusion_matrix'] == [[1, 1], [0, 2]] and report['split'] == 'test'
    assert 'checkpoint' not in json.dumps(report)            # no paths to the page
    curves = read_curves(tmp_path)
    assert curves['train/loss'] == [(1.0, 1.5), (2.0, 1.0)] and curves['val/macro_f1'][-1] == (2.0, 0.4)


# --- the HTTP API ---------------------------------------------------------------------------
@dataclass
class FakeDeployResult:
    accepted: bool
    reason: str
    model_path: str


@pytest.fixture
def api(tmp_path):
    folders = Folders(tmp_path / 'datasets', tmp_path / 'runs', tmp_path / 'models',
                      tmp_path / 'runs' / 'registry.sqlite').resolved()
    for d in (folders.datasets, folders.runs, folders.models):
        d.mkdir(parents=True)
    reg = Registry(folders.registry)
    for version, f1 in (('v1', 0.5), ('v2', 0.7), ('bad', 0.0)):
        path = folders.models / f'{version}.onnx'
        path.write_bytes(b'onnx ' + version.encode())
        reg.register_model(version, path, 'ab' * 32, ['good', 'crack'],
                           {'macro_f1': f1, 'per_class': {'good': {'f1': f1, 'precision': 1.0, 'recall': f1}}})
    outside = tmp_path / 'elsewhere.onnx'
    outside.write_bytes(b'x')
    reg.register_model('outside', outside, 'cd' * 32, ['good'], {})
    calls = []

    def fake_deploy(version, registry, node, timeout_s):
        calls.append(version)
        accepted = version != 'bad'
        reason = '' if accepted else 'model refused, model v1 keeps serving: not an ONNX file'
        registry.record_deploy(version, node, accepted, reason)
        return FakeDeployResult(accepted, reason, str(folders.models / f'{version}.onnx'))

    ctx = DashboardContext(token=TOKEN, folders=folders, live=LiveState(), jobs=TrainingJobs(folders),
                           models=ModelActions(folders, deploy_fn=fake_deploy))
    client = TestClient(create_app(ctx))
    client.calls = calls
    return client


ACTIONS = [('post', '/api/models/v1/deploy'), ('post', '/api/models/v1/promote'),
           ('delete', '/api/models/v1'), ('post', '/api/models/rollback'), ('post', '/api/capture'),
           ('post', '/api/training/jobs'), ('post', '/api/training/jobs/x/cancel'),
           ('post', '/api/live/alarm/ack')]


@pytest.mark.parametrize('method,path', ACTIONS)
def test_every_action_needs_the_token(api, method, path):
    assert getattr(api, method)(path).status_code == 401
    assert getattr(api, method)(path, headers={'X-Weld-Token': 'wrong'}).status_code == 403
    assert api.calls == []


def test_reads_need_no_token_and_the_openapi_document_lists_every_endpoint(api):
    assert api.get('/api/live').status_code == 200
    assert api.get('/api/models').status_code == 200
    paths = api.get('/openapi.json').json()['paths']
    for _, path in ACTIONS:
        assert path.replace('v1', '{version}').replace('/x/', '/{job_id}/') in paths
    for path in ('/api/live', '/api/live/image.jpg', '/api/live/stream.mjpeg', '/api/status',
                 '/api/capture/counts', '/api/training/jobs/{job_id}', '/api/models/compare'):
        assert path in paths
    assert api.get('/').text.count('dashboard.js') == 1


def test_a_localhost_dashboard_answers_only_to_localhost_host_names(tmp_path):
    from weld_vision_ros.dashboard.app import LOOPBACK_HOSTS
    folders = Folders(tmp_path, tmp_path, tmp_path, tmp_path / 'r.sqlite').resolved()
    ctx = DashboardContext(token=TOKEN, folders=folders, live=LiveState(), jobs=TrainingJobs(folders),
                           models=ModelActions(folders))
    client = TestClient(create_app(ctx, allowed_hosts=LOOPBACK_HOSTS), base_url='http://127.0.0.1:8090')
    assert client.get('/api/live').status_code == 200
    # A page elsewhere that rebinds its own name to 127.0.0.1 sends its own Host header.
    assert client.get('/api/live', headers={'Host': 'attacker.example'}).status_code == 400


def test_without_ros_the_live_and_capture_endpoints_say_so(api):
    assert api.get('/api/live').json()['ros_running'] is False
    r = api.get('/api/capture/counts')
    assert r.status_code == 503 and 'without ROS' in r.json()['detail']
    assert api.post('/api/capture', json={'label': 'good'}, headers=AUTH).status_code == 503
    assert api.get('/api/live/image.jpg').status_code == 404


def test_models_list_compare_promote_and_the_active_one_cannot_be_deleted(api):
    models = {m['version']: m for m in api.get('/api/models').json()['models']}
    assert models['v2']['metrics'] == {'macro_f1': 0.7} and models['v2']['file_name'] == 'v2.onnx'
    assert 'onnx_path' not in models['v2']           # the page never sees file paths
    cmp = api.get('/api/models/compare', params={'versions': ['v1', 'v2']}).json()
    assert cmp['versions'] == ['v1', 'v2']
    assert {'metric': 'macro_f1', 'values': [0.5, 0.7]} in cmp['rows']
    assert api.get('/api/models/compare', params={'versions': ['v1']}).status_code == 409
    assert api.post('/api/models/v2/promote', headers=AUTH).json()['status'] == 'active'
    r = api.delete('/api/models/v2', headers=AUTH)
    assert r.status_code == 409 and 'active model' in r.json()['detail']
    assert api.delete('/api/models/v1', headers=AUTH).json()['removed_files'] == ['v1.onnx']
    assert 'v1' not in {m['version'] for m in api.get('/api/models').json()['models']}


def test_deploy_reports_the_nodes_answer_and_rollback_goes_to_the_previous_model(api):
    r = api.post('/api/models/rollback', headers=AUTH)
    assert r.status_code == 409 and 'nothing to roll back' in r.json()['detail']
    assert api.post('/api/models/v1/deploy', headers=AUTH).json()['accepted'] is True
    refused = api.post('/api/models/bad/deploy', headers=AUTH).json()
    assert refused['accepted'] is False and 'not an ONNX file' in refused['reason']
    assert api.post('/api/models/v2/deploy', headers=AUTH).json()['accepted'] is True
    back = api.post('/api/models/rollback', headers=AUTH).json()
    assert back['version'] == 'v1' and back['rolled_back_from'] == 'v2' and back['accepted']
    assert api.get('/api/models').json()['deploy_history'] == ['v1', 'v2', 'v1']
    r = api.post('/api/models/outside/deploy', headers=AUTH)
    assert r.status_code == 409 and 'outside the configured' in r.json()['detail']
    assert api.calls == ['v1', 'bad', 'v2', 'v1']


def test_training_jobs_cannot_name_paths_outside_the_folders(api):
    for body, word in (({'dataset': '../secret'}, 'plain name'), ({'dataset': 'missing'}, 'no dataset'),
                       ({'dataset': 'x', 'name': '../../etc'}, 'plain name'),
                       ({'dataset': 'x', 'overrides': ['registry=/tmp/r.sqlite']}, 'registry')):
        r = api.post('/api/training/jobs', json=body, headers=AUTH)
        assert r.status_code == 400 and word in r.json()['detail'], (body, r.json())
    assert api.get('/api/training/jobs').json() == []


def test_launch_and_runner_start_the_dashboard_only_when_asked():
    from weld_vision_ros.ros.launch_args import LaunchArgumentError, dashboard_command, plan_cell_launch
    params = str(Path(__file__).resolve().parent.parent / 'config' / 'weld_cell.yaml')
    plan = plan_cell_launch({'params_file': params}, '.')
    assert plan.dashboard_cmd is None and plan.rule_overrides == {}
    plan = plan_cell_launch({'params_file': params, 'dashboard': 'true', 'namespace': 'cell_2',
                             'dashboard_args': "--port 8099 --token-file '/etc/weld/t'"}, '.')
    assert plan.dashboard_cmd[1:] == ['-m', 'weld_vision_ros.dashboard', '--namespace', 'cell_2',
                                      '--port', '8099', '--token-file', '/etc/weld/t']
    assert plan.rule_overrides == {'publish_debug_image': True}
    with pytest.raises(LaunchArgumentError, match='dashboard'):
        plan_cell_launch({'params_file': params, 'dashboard': 'yes'}, '.')
    with pytest.raises(LaunchArgumentError, match='dashboard_args'):
        dashboard_command("--token 'unclosed")
    from weld_vision_ros.dashboard.server import build_parser, onnx_node
    args = build_parser().parse_args(plan.dashboard_cmd[3:])
    assert args.port == 8099 and args.host == '127.0.0.1'   # localhost unless told otherwise
    assert onnx_node(args) == '/cell_2/onnx_defect_node'    # deploys go to the cell's own node
    assert onnx_node(build_parser().parse_args([])) == '/onnx_defect_node'


# --- review screen ---------------------------------------------------------------------------
def test_review_bags_are_shown_frame_by_frame_and_labelled_into_their_sidecar(tmp_path):
    import yaml

    from weld_vision_ros.core.camera import Intrinsics
    from weld_vision_ros.dashboard.review import ReviewBags
    from weld_vision_ros.ros.dataset_bag import DatasetBagWriter, read_sidecar
    review_dir = tmp_path / 'review'
    bag_path = review_dir / 'review_20261202_101500'
    rgb = np.zeros((48, 64, 3), np.uint8)
    rgb[:, 32:] = (0, 0, 255)                                     # blue right half
    intr = Intrinsics.from_k([50.0, 0, 32, 0, 50.0, 24, 0, 0, 1], 64, 48)
    with DatasetBagWriter(bag_path, 'mcap') as bag:
        for stamp in (1_000, 2_000):
            bag.write_frame(stamp, rgb, np.full((48, 64), 0.3, np.float32), intr, label='good')
    (bag_path / 'review.yaml').write_text(yaml.safe_dump([
        {'stamp_ns': 1_000, 'reasons': ['disagreement'], 'rule_class': 'good', 'ml_class': 'crack',
         'final_class': 'good', 'confidence': 0.55, 'weld_id': 'w1'},
        {'stamp_ns': 2_000, 'reasons': ['low_confidence'], 'rule_class': 'gap', 'ml_class': 'gap',
         'final_class': 'gap', 'confidence': 0.4, 'weld_id': 'w1'}]))
    folders = Folders(tmp_path, tmp_path, tmp_path, tmp_path / 'r.sqlite').resolved()
    ctx = DashboardContext(token=TOKEN, folders=folders, live=LiveState(), jobs=TrainingJobs(folders),
                           models=ModelActions(folders), review=ReviewBags(review_dir))
    api = TestClient(create_app(ctx))
    name = bag_path.name
    assert api.get('/api/review/bags').json() == [{'name': name, 'frames': 2, 'labelled': 0, 'finished': True}]
    frames = api.get(f'/api/review/bags/{name}').json()['frames']
    assert [f['reasons'] for f in frames] == [['disagreement'], ['low_confidence']]
    assert frames[0]['ml_class'] == 'crack' and frames[0]['label'] == ''
    jpeg = api.get(f'/api/review/bags/{name}/frames/2000.jpg')
    img = cv2.imdecode(np.frombuffer(jpeg.content, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (48, 64, 3) and img[24, 60, 0] > 200          # BGR: blue where it was drawn
    url = f'/api/review/bags/{name}/labels'
    assert api.post(url, json={'stamp_ns': 1_000, 'label': 'crack'}).status_code == 401
    assert api.post(url, json={'stamp_ns': 1_000, 'label': 'crack'}, headers=AUTH).json()['labelled'] == 1
    assert [(s.start_ns, s.label, s.weld_id) for s in read_sidecar(bag_path / 'labels.yaml')] == [(1_000, 'crack', 'w1')]
    r = api.post(url, json={'stamp_ns': 1_500, 'label': 'gap'}, headers=AUTH)
    assert r.status_code == 400 and 'no frame stamped 1500' in r.json()['detail']
    r = api.post(url, json={'stamp_ns': 2_000, 'label': 'rust'}, headers=AUTH)
    assert r.status_code == 400 and 'rust' in r.json()['detail']
    assert api.get('/api/review/bags/..%2F..%2Fetc').status_code in (400, 404)
    assert api.get('/api/review/bags/missing').status_code == 400
    assert api.get(f'/api/review/bags/{name}').json()['frames'][0]['label'] == 'crack'
