"""The dashboard in a real browser (headless chromium driven by playwright) across real
processes: the cell (`weld-vision run`: synthetic camera, rule node with its debug image,
ONNX node, dataset capture node) in one process, the dashboard in another, the browser in
a third, and this process checking what the page shows against what the nodes did.

Chromium comes from the distribution (scripts/setup.sh installs it); `playwright install`
is not used. Without /usr/bin/chromium the tests fail, unless WELD_SKIP_CHROMIUM=1.
`WELD_DASHBOARD_SCREENSHOTS=docs/dashboard` writes the README's screenshots of each screen.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from test.helpers.onnx_models import sha256_file, write_model
from test.rosutil import REPO, stop
from weld_training.registry import Registry
from weld_vision_ros.core.classes import DEFAULT_CLASS_NAMES

pytestmark = [pytest.mark.ros, pytest.mark.slow]

CHROMIUM = os.environ.get('WELD_CHROMIUM', '/usr/bin/chromium')
TOKEN = 'browser-test-token'
# Screenshots of each screen: into a temporary folder, or where WELD_DASHBOARD_SCREENSHOTS
# says (docs/dashboard regenerates the README's).
SHOTS = Path(os.environ.get('WELD_DASHBOARD_SCREENSHOTS') or Path(os.environ.get('TMPDIR', '/tmp')) / 'weld_dashboard_shots')
# The page polls once a second; a deploy validates the model (warm-up) before it answers.
UI_TIMEOUT_MS = 30_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f'the dashboard exited with {proc.returncode}')
        try:
            with urllib.request.urlopen(url, timeout=1.0) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f'{url} did not answer within {timeout_s} s')


def _write_review_bag(path: Path) -> Path:
    """A finished review bag as review_recorder_node leaves it: frames and review.yaml."""
    import numpy as np
    import yaml

    from weld_vision_ros.core.camera import Intrinsics
    from weld_vision_ros.ros.dataset_bag import DatasetBagWriter
    intr = Intrinsics.from_k([300.0, 0, 160, 0, 300.0, 120, 0, 0, 1], 320, 240)
    with DatasetBagWriter(path, 'mcap') as bag:
        for i, stamp in enumerate((1_000_000, 2_000_000)):
            rgb = np.full((240, 320, 3), 90 + 60 * i, np.uint8)
            bag.write_frame(stamp, rgb, np.full((240, 320), 0.3, np.float32), intr, label='good')
    (path / 'review.yaml').write_text(yaml.safe_dump([
        {'stamp_ns': 1_000_000, 'reasons': ['disagreement'], 'rule_class': 'good', 'ml_class': 'crack',
         'final_class': 'good', 'confidence': 0.55, 'weld_id': 'w7'},
        {'stamp_ns': 2_000_000, 'reasons': ['low_confidence'], 'rule_class': 'gap', 'ml_class': 'gap',
         'final_class': 'gap', 'confidence': 0.41, 'weld_id': 'w7'}]))
    return path


@pytest.fixture(scope='module')
def cell(tmp_path_factory):
    if not os.access(CHROMIUM, os.X_OK):
        if os.environ.get('WELD_SKIP_CHROMIUM') == '1':
            pytest.skip('WELD_SKIP_CHROMIUM=1 and no chromium')
        pytest.fail(f'{CHROMIUM} not found: scripts/setup.sh installs it (apt-get install -y chromium)')
    from test.helpers.training_toy import make_toy_dataset
    root = tmp_path_factory.mktemp('dashboard')
    datasets, runs, models = root / 'datasets', root / 'runs', root / 'models'
    for d in (runs, models):
        d.mkdir()
    make_toy_dataset(datasets, n_per_class=4, frames_per_weld=5)   # datasets/ds
    registry = Registry(runs / 'registry.sqlite')
    for version, seed in (('weld-v1', 0), ('weld-v2', 1)):
        path = write_model(models / f'{version}.onnx', version, seed=seed)
        registry.register_model(version, path, sha256_file(path), DEFAULT_CLASS_NAMES,
                                {'macro_f1': 0.5 + 0.1 * seed, 'accuracy': 0.6 + 0.1 * seed})
    good = (models / 'weld-v2.onnx').read_bytes()
    corrupt = models / 'weld-corrupt.onnx'
    corrupt.write_bytes(good[:len(good) // 2])          # a truncated export
    registry.register_model('weld-corrupt', corrupt, sha256_file(corrupt), DEFAULT_CLASS_NAMES, {})

    review_bag = _write_review_bag(root / 'review' / 'review_20261202_101500')
    bag_dir = root / 'bags' / 'capture'         # the capture node's bag, in the dashboard's bags folder
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    sets = {'synthetic_camera_node.rate_hz': 4.0, 'synthetic_camera_node.seed': 3,
            'synthetic_camera_node.image_reliability': 'reliable',
            'rule_defect_node.publish_debug_image': True, 'onnx_defect_node.mode': 'ml',
            # sqlite3: the runner's executor threads take turns with the bag (one thread writes it)
            'dataset_capture_node.bag_dir': str(bag_dir), 'dataset_capture_node.storage': 'sqlite3'}
    cmd = [sys.executable, '-m', 'weld_vision_ros.bringup', '--sim-camera', '--nodes', 'rule_defect_node',
           'onnx_defect_node', 'dataset_capture_node', '--model-path', str(models / 'weld-v1.onnx'),
           '--threads', '4']
    for k, v in sets.items():
        cmd += ['--set', f'{k}={str(v).lower() if isinstance(v, bool) else v}']
    cell_log = open(root / 'cell.log', 'w')
    cell_proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=cell_log, stderr=subprocess.STDOUT,
                                 start_new_session=True)
    port = _free_port()
    dash_log = open(root / 'dashboard.log', 'w')
    dash_proc = subprocess.Popen(
        [sys.executable, '-m', 'weld_vision_ros.dashboard', '--port', str(port), '--token', TOKEN,
         '--datasets-dir', str(datasets), '--runs-dir', str(runs), '--models-dir', str(models),
         '--bags-dir', str(root / 'bags'), '--review-dir', str(root / 'review'), '--registry', str(runs / 'registry.sqlite'), '--min-samples', '5'],
        cwd=REPO, env=env, stdout=dash_log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f'http://127.0.0.1:{port}'
    try:
        _wait_http(url + '/api/status', dash_proc, 60.0)
        yield {'url': url, 'root': root, 'bag_dir': bag_dir, 'cell': cell_proc, 'dashboard': dash_proc,
               'registry': registry, 'review_bag': review_bag}
    finally:
        stop(dash_proc)
        stop(cell_proc)
        cell_log.close()
        dash_log.close()


@pytest.fixture(scope='module')
def browser():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=['--no-sandbox'])
        yield b
        b.close()


@pytest.fixture
def page(browser, cell):
    context = browser.new_context(viewport={'width': 1400, 'height': 900})
    pg = context.new_page()
    pg.set_default_timeout(UI_TIMEOUT_MS)
    pg.goto(cell['url'] + '/')
    yield pg
    context.close()


def _count(page) -> int:
    return int(page.text_content('#verdict-count') or 0)


def _enter_token(page, token: str = TOKEN) -> None:
    page.fill('#token', token)
    page.dispatch_event('#token', 'change')


def _live_model(page) -> str:
    return page.text_content('#model-version') or ''


def test_live_verdicts_update_while_the_camera_runs(page):
    page.wait_for_function("document.querySelector('#conn').dataset.state === 'live'", timeout=60_000)
    first = _count(page)
    page.wait_for_function(f"parseInt(document.querySelector('#verdict-count').textContent) >= {first + 4}")
    assert page.text_content('#verdict') not in ('', '–')
    # The debug image streams (MJPEG) and shows a real frame.
    page.wait_for_function("document.querySelector('#debug-image').naturalWidth > 0")
    assert page.eval_on_selector('#debug-image', 'e => e.naturalWidth') == 640
    assert 'spec 8' in page.text_content('#bead-table') or 'not measured' in page.text_content('#bead-table')
    assert page.locator('#history tbody tr').count() >= 4
    assert _live_model(page) == 'weld-v1'
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / 'live.png'))


def test_an_action_without_the_token_is_refused(page, cell):
    page.click('button[data-screen=models]')
    page.wait_for_selector('#models tr[data-version="weld-v2"]')
    page.click('#models tr[data-version="weld-v2"] button.deploy')
    page.wait_for_function("document.querySelector('#deploy-answer').dataset.accepted === 'error'")
    assert '401' in page.text_content('#deploy-answer')
    assert 'refused' in page.text_content('#message')
    _enter_token(page, 'not-the-token')
    page.click('#models tr[data-version="weld-v2"] button.deploy')
    page.wait_for_function("document.querySelector('#deploy-answer').textContent.includes('403')")
    assert not [e for e in cell['registry'].events() if e['kind'].startswith('deploy')]
    assert _live_model(page) == 'weld-v1'


def test_a_deploy_from_the_page_switches_the_model_and_a_corrupt_one_shows_the_refusal(page, cell):
    _enter_token(page)
    page.click('button[data-screen=models]')
    page.wait_for_selector('#models tr[data-version="weld-v2"]')
    page.click('#models tr[data-version="weld-v2"] button.deploy')
    page.wait_for_function("document.querySelector('#deploy-answer').dataset.accepted === 'true'")
    # What the node now serves, as it reports it (weld/cell_status), and in its verdicts.
    page.wait_for_function("document.querySelector('#model-version').textContent === 'weld-v2'")
    page.click('#models tr[data-version="weld-corrupt"] button.deploy')
    page.wait_for_function("document.querySelector('#deploy-answer').dataset.accepted === 'false'")
    answer = page.text_content('#deploy-answer')
    assert 'REFUSED weld-corrupt' in answer and 'weld-v2 keeps serving' in answer, answer
    page.screenshot(path=str(SHOTS / 'models.png'))
    time.sleep(1.5)
    assert _live_model(page) == 'weld-v2'
    kinds = [(e['kind'], e['version']) for e in cell['registry'].events() if e['kind'].startswith('deploy')]
    assert kinds == [('deploy_accepted', 'weld-v2'), ('deploy_refused', 'weld-corrupt')]
    # Roll back: deploy v1 from the page, then one click goes back to v2.
    page.click('#models tr[data-version="weld-v1"] button.deploy')
    page.wait_for_function("document.querySelector('#model-version').textContent === 'weld-v1'")
    page.click('#rollback')
    page.wait_for_function("document.querySelector('#deploy-answer').textContent.includes('rolled back from weld-v1')")
    page.wait_for_function("document.querySelector('#model-version').textContent === 'weld-v2'")
    # The active model cannot be deleted; compare shows both side by side.
    page.click('#models tr[data-version="weld-v2"] button.promote')
    page.wait_for_function("document.querySelector('#models tr[data-version=\"weld-v2\"]').textContent.includes('active')")
    page.click('#models tr[data-version="weld-v2"] button.delete')
    page.wait_for_function("document.querySelector('#message').textContent.includes('active model')")
    page.check('#models input.pick[data-version="weld-v1"]')
    page.check('#models input.pick[data-version="weld-v2"]')
    page.click('#compare')
    page.wait_for_selector('#compare-table td:has-text("macro_f1")')
    page.screenshot(path=str(SHOTS / 'models_compare.png'), full_page=True)


def test_a_label_click_writes_a_frame_into_the_bag(page, cell):
    _enter_token(page)
    page.click('button[data-screen=capture]')
    page.wait_for_selector('#capture-counts tr[data-class="porosity"]')
    before = int(page.text_content('#capture-counts tr[data-class="porosity"] td.count'))
    page.click('button.label[data-label="porosity"]')
    page.wait_for_function("document.querySelector('#capture-result').textContent.includes('wrote frame')")
    page.wait_for_function(f"document.querySelector('#capture-counts tr[data-class=\"porosity\"] td.count')"
                           f".textContent === '{before + 1}'")
    time.sleep(0.6)                       # a new camera frame (4 Hz) for the key press
    # Key 5 (gap), pressed with the focus on the page's labels, not in a text field.
    page.press('#label-buttons button.label[data-label="good"]', '5')
    page.wait_for_function("document.querySelector('#capture-counts tr[data-class=\"gap\"] td.count')"
                           ".textContent === '1'")
    page.screenshot(path=str(SHOTS / 'capture.png'))
    cell['captured'] = ['porosity', 'gap']     # read back from the bag once the cell stops


def test_review_frames_are_labelled_by_key_into_the_bags_sidecar(page, cell):
    from weld_vision_ros.ros.dataset_bag import read_sidecar
    _enter_token(page)
    page.click('button[data-screen=review]')
    page.wait_for_function("document.querySelector('#review-image').naturalWidth === 320")
    assert 'disagreement' in page.text_content('#review-table') and 'crack' in page.text_content('#review-table')
    page.press('#review-buttons button.label[data-label="good"]', '6')      # key 6: crack, then the next frame
    page.wait_for_function("document.querySelector('#review-count').textContent.includes('frame 2 of 2, 1 labelled')")
    page.screenshot(path=str(SHOTS / 'review.png'))
    spans = read_sidecar(cell['review_bag'] / 'labels.yaml')
    assert [(s.start_ns, s.label, s.weld_id) for s in spans] == [(1_000_000, 'crack', 'w7')]


TOY_OVERRIDES = ['model.input_size=48', 'model.crop=frame', 'train.batch_size=16', 'train.threads=1',
                 'train.precise_bn_batches=1', 'train.sample_images=0', 'train.lr=0.003',
                 'data.min_samples_per_class=5']


def test_a_training_job_started_from_the_page_shows_progress_and_can_be_cancelled(page, cell):
    _enter_token(page)
    page.click('button[data-screen=training]')
    page.wait_for_selector('#job-dataset option[value="ds"]', state='attached')
    page.select_option('#job-dataset', 'ds')
    page.select_option('#job-channels', 'rgb')
    page.fill('#job-epochs', '40')
    page.fill('#job-name', 'toy-job')
    page.fill('#job-overrides', '\n'.join(TOY_OVERRIDES))
    page.click('#job-start')
    row = '#jobs tr[data-job="toy-job"]'
    page.wait_for_selector(row)
    # Progress from the run's own records: running, then at least one epoch with an ETA.
    page.wait_for_function(f"document.querySelector('{row}') && document.querySelector('{row}').dataset.status === 'running'",
                           timeout=60_000)
    page.wait_for_function(f"/^[1-9]\\d*\\/40/.test(document.querySelector('{row} td:nth-child(3)').textContent)",
                           timeout=60_000)
    assert 'min' in page.text_content(f'{row} td:nth-child(4)')          # ETA shown
    page.wait_for_selector('#chart-val svg')
    page.screenshot(path=str(SHOTS / 'training.png'))
    page.click(f'{row} button.cancel')
    page.wait_for_function(f"document.querySelector('{row}').dataset.status === 'cancelled'", timeout=60_000)
    run = [r for r in cell['registry'].list_runs() if Path(r.run_dir).name == 'toy-job'][0]
    assert run.status == 'cancelled' and 0 < run.epoch < 40
    assert (Path(run.run_dir) / 'last.pt').is_file()
    assert not (Path(run.run_dir) / 'model.onnx').exists()     # a cancelled job exports nothing


def test_a_finished_job_shows_its_report_and_its_model_can_be_deployed(page, cell):
    _enter_token(page)
    page.click('button[data-screen=training]')
    page.wait_for_selector('#job-dataset option[value="ds"]', state='attached')
    page.select_option('#job-channels', 'rgb')
    page.fill('#job-epochs', '2')
    page.fill('#job-name', 'toy-done')
    page.fill('#job-overrides', '\n'.join(TOY_OVERRIDES + ['export.parity_samples=4']))
    page.click('#job-start')
    row = '#jobs tr[data-job="toy-done"]'
    page.wait_for_function(f"document.querySelector('{row}') && document.querySelector('{row}').dataset.status === 'finished'",
                           timeout=90_000)
    # The process goes on to evaluate and export after the run is marked finished.
    page.wait_for_function("document.querySelector('#job-report').textContent.includes('confusion matrix')",
                           timeout=60_000)
    assert all(c in page.text_content('#job-report') for c in DEFAULT_CLASS_NAMES)
    page.screenshot(path=str(SHOTS / 'training_report.png'), full_page=True)
    # Registered by the job: the model screen lists it and the node accepts it.
    run = [r for r in cell['registry'].list_runs() if Path(r.run_dir).name == 'toy-done'][0]
    deadline = time.monotonic() + 60.0
    while not [m for m in cell['registry'].list_models() if m.run_id == run.run_id]:
        assert time.monotonic() < deadline, 'the job registered no model'
        time.sleep(0.5)
    model = [m for m in cell['registry'].list_models() if m.run_id == run.run_id][0]
    page.click('button[data-screen=models]')
    page.click(f'#models tr[data-version="{model.version}"] button.deploy')
    page.wait_for_function(f"document.querySelector('#model-version').textContent === '{model.version}'")


def test_the_page_says_when_a_node_is_down(page, cell):
    stop(cell['cell'])
    page.wait_for_function("document.querySelector('#banners').textContent.includes('onnx_defect_node is down')",
                           timeout=30_000)
    page.wait_for_function("document.querySelector('#conn').dataset.state === 'no_frames'")
    assert 'NO FRAMES' in page.text_content('#conn')
    page.wait_for_function("document.querySelector('#cell-table').textContent.includes('onnx_defect_node is down')")
    page.screenshot(path=str(SHOTS / 'node_down.png'))
    # A page opened after the camera stopped still shows the last debug image.
    page.reload(wait_until='domcontentloaded')
    page.wait_for_function("document.querySelector('#debug-image').naturalWidth > 0")
    # The cell stopped cleanly, so the capture node closed its bag: the labels clicked on the
    # page are in it, each beside the frame it labels.
    if cell.get('captured'):
        from rosbags.rosbag2 import Reader

        from weld_vision_ros.ros.dataset_bag import COLOR_TOPIC, LABEL_TOPIC, make_typestore
        bags = sorted(p.parent for p in cell['bag_dir'].rglob('metadata.yaml'))
        assert len(bags) == 1, list(cell['bag_dir'].rglob('*'))
        store = make_typestore()
        with Reader(bags[0]) as reader:
            counts = {c.topic: c.msgcount for c in reader.connections}
            labels = [store.deserialize_cdr(raw, c.msgtype).label for c, _, raw in
                      reader.messages(connections=[c for c in reader.connections if c.topic == LABEL_TOPIC])]
        assert labels == cell['captured']
        assert counts[COLOR_TOPIC] == len(cell['captured'])
        # ... and, finished, it is offered to training jobs on the page.
        with urllib.request.urlopen(cell['url'] + '/api/training/bags', timeout=5.0) as r:
            assert json.loads(r.read()) == [{'name': 'capture'}]
