"""End to end: record bags, `weld-train pipeline` on CPU, export, parity, and the model run
through onnxruntime the way the ONNX node runs it (ModelContract + the shared preprocess)."""
import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from test.helpers.training_toy import TOY_CLI, record_toy_bag, toy_welds
from weld_training import cli
from weld_training.bags import iter_bag_frames
from weld_training.export import ExportError, ParityError, export_model
from weld_training.checkpoints import load_checkpoint_model
from weld_vision_ros.core.model_contract import ModelContract
from weld_vision_ros.core.preprocess import preprocess

REPO = Path(__file__).resolve().parent.parent
torch.set_num_threads(2)


@pytest.fixture(scope='module')
def pipeline_run(tmp_path_factory):
    root = tmp_path_factory.mktemp('e2e')
    rng = np.random.default_rng(11)
    record_toy_bag(root / 'bags' / 'day1', toy_welds(3, 'd1'), 6, rng, storage='sqlite3')
    record_toy_bag(root / 'bags' / 'day2', toy_welds(3, 'd2'), 6, rng, storage='mcap',
                   t0_ns=1_800_000_000_000_000_000, depth_encoding='32FC1', color_encoding='bgr8')
    env = dict(os.environ, OMP_NUM_THREADS='2')
    cmd = [sys.executable, '-m', 'weld_training.cli', 'pipeline', str(root / 'bags'), '--dataset', str(root / 'ds'),
           '-o', str(root / 'run'), '--epochs', '6', '--min-samples', '10', '--no-progress', '--quantize',
           '--set', 'model.input_size=48', '--set', 'model.crop=frame', '--set', 'train.threads=2', '--set', 'train.batch_size=16',
           '--set', 'train.lr=0.004', '--set', 'train.sample_images=2', '--set', 'export.calibration_samples=16',
           *TOY_CLI]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env=env, cwd=root)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return root, r.stdout


def test_pipeline_writes_every_step(pipeline_run):
    root, out = pipeline_run
    for step in ('1/4 extract', '2/4 train', '3/4 evaluate', '4/4 export'):
        assert f'[pipeline] {step}' in out
    run = root / 'run'
    for name in ('config.yaml', 'best.pt', 'last.pt', 'history.json', 'eval/report.json', 'eval/report.md',
                 'eval/report_confusion.png', 'eval/report_reliability.png', 'model.onnx', 'model.int8.onnx', 'model.export.json', 'pipeline.json'):
        assert (run / name).is_file(), name
    result = json.loads((run / 'pipeline.json').read_text())
    parity = result['export']['parity']
    assert parity['passed'] and parity['max_abs_diff'] <= 1e-4 and parity['samples'] == 16
    int8 = result['export']['int8']
    assert int8['accuracy_change'] == pytest.approx(int8['int8_accuracy'] - int8['fp32_accuracy'])
    assert int8['size_bytes']['int8'] < int8['size_bytes']['fp32']
    # Six epochs on easy toy classes: far above the 1/6 of guessing.
    assert result['test_metrics']['accuracy'] > 0.4, result['test_metrics']


def test_exported_model_runs_as_the_onnx_node_runs_it(pipeline_run):
    import onnx
    import onnxruntime as ort

    root, _ = pipeline_run
    path = root / 'run' / 'model.onnx'
    proto = onnx.load(str(path))
    assert max(o.version for o in proto.opset_import if o.domain in ('', 'ai.onnx')) >= 17
    sess = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    contract = ModelContract.from_metadata(sess.get_modelmeta().custom_metadata_map)
    assert contract.input_name == 'image' and contract.output_name == 'logits' and contract.output_kind == 'logits'
    assert contract.metrics['split'] == 'test' and 0 <= contract.metrics['macro_f1'] <= 1
    assert len(contract.weights_sha256) == 64
    # Calibrated at export on the val split: the temperature in the contract is the summary's.
    calibration = json.loads((root / 'run' / 'model.export.json').read_text())['calibration']
    assert calibration['split'] == 'val' and contract.temperature == pytest.approx(calibration['temperature'])
    assert calibration['nll_after'] <= calibration['nll_before'] + 1e-9
    model, ckpt = load_checkpoint_model(root / 'run' / 'best.pt')
    assert list(contract.class_names) == ckpt['class_names'] and contract.preprocess == ckpt['preset_obj']

    # Frames straight from a bag (not the dataset folder), preprocessed as the node does.
    frames = list(iter_bag_frames(root / 'bags' / 'day2'))
    x = np.stack([preprocess(f.rgb, f.depth_m, contract.preprocess) for f in frames])
    logits = sess.run([contract.output_name], {contract.input_name: x})[0]
    with torch.inference_mode():
        ref = model(torch.from_numpy(x)).numpy()
    assert np.abs(logits - ref).max() <= 1e-4
    predicted = [contract.class_names[i] for i in logits.argmax(1)]
    assert np.mean([p == f.label for p, f in zip(predicted, frames)]) > 0.4
    one = sess.run(None, {'image': x[:1]})[0]  # dynamic batch
    assert one.shape == (1, len(contract.class_names))

    int8 = ModelContract.from_metadata(
        ort.InferenceSession(str(root / 'run' / 'model.int8.onnx'),
                             providers=['CPUExecutionProvider']).get_modelmeta().custom_metadata_map)
    assert int8.model_version == contract.model_version + '-int8' and int8.weights_sha256 != contract.weights_sha256


def test_parity_failure_and_bad_opset_are_refused(pipeline_run, tmp_path):
    root, _ = pipeline_run
    with pytest.raises(ParityError, match='differ by'):
        export_model(root / 'run' / 'best.pt', tmp_path / 'strict.onnx', root / 'ds', parity_tolerance=0.0,
                     parity_samples=4, log=lambda s: None)
    assert not (tmp_path / 'strict.onnx').exists() and (tmp_path / 'strict.parity_failed.onnx').exists()
    with pytest.raises(ExportError, match='opset must be >= 17'):
        export_model(root / 'run' / 'best.pt', tmp_path / 'old.onnx', root / 'ds', opset=13, log=lambda s: None)


def test_cli_standalone_steps_and_errors(pipeline_run, tmp_path, capsys):
    root, _ = pipeline_run
    assert cli.main(['evaluate', str(root / 'run' / 'best.pt'), '--split', 'val', '--out', str(tmp_path / 'ev')]) == 0
    assert json.loads((tmp_path / 'ev' / 'report.json').read_text())['context']['split'] == 'val'
    assert cli.main(['export', str(root / 'run' / 'best.pt'), '--out', str(tmp_path / 'm.onnx'),
                     '--model-version', 'toy-1', '--metrics', str(tmp_path / 'ev' / 'report.json')]) == 0
    from weld_training.export import read_contract
    c = read_contract(tmp_path / 'm.onnx')
    assert c.model_version == 'toy-1' and c.metrics['split'] == 'val'
    assert cli.main(['train', '--dataset', str(root / 'ds'), '--set', 'train.epoch=2']) == 2
    assert "unknown config key 'train.epoch'" in capsys.readouterr().err
    assert cli.main(['extract', str(tmp_path / 'nothing-here'), '--out', str(tmp_path / 'x')]) == 2
    assert 'no such bag or folder' in capsys.readouterr().err


@pytest.mark.parametrize('command', [[], ['extract'], ['train'], ['evaluate'], ['export'], ['pipeline']])
def test_help_for_every_step(command, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(command + ['--help'])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert 'usage: weld-train' in text
    if not command:
        for sub in ('extract', 'train', 'evaluate', 'export', 'pipeline'):
            assert sub in text


def test_console_script_is_registered():
    tree = ast.parse((REPO / 'setup.py').read_text())
    scripts = [ast.literal_eval(n) for n in ast.walk(tree) if isinstance(n, ast.Constant)
               and isinstance(n.value, str) and n.value.startswith('weld-train =')]
    assert scripts == ['weld-train = weld_training.cli:main']
    module, func = scripts[0].split('=')[1].strip().split(':')
    assert callable(getattr(__import__(module, fromlist=[func]), func))
