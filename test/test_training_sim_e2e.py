"""End to end on synthetic recordings: `weld-sim record` bags (label topic and sidecar-only),
`weld-train pipeline` on CPU, export with parity, and the model loaded from its contract
and fed by the shared preprocess, as the ONNX node does."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from weld_training import cli
from weld_training.bags import iter_bag_frames
from weld_training.dataset import load_manifest
from weld_training.checkpoints import load_checkpoint_model
from weld_vision_ros.core.model_contract import ModelContract
from weld_vision_ros.core.preprocess import preprocess
from weld_vision_ros.simulator.sim_record import main as weld_sim

from test.helpers.training_toy import TOY_CLI

torch.set_num_threads(2)


@pytest.fixture(scope='module')
def sim_run(tmp_path_factory):
    root = tmp_path_factory.mktemp('sim_e2e')
    common = ['--width', '96', '--height', '72', '--frames-per-weld', '4', '--quiet']
    assert weld_sim(['record', '--out', str(root / 'bags' / 'topic'), '--frames', '144', '--seed', '3',
                     '--storage', 'sqlite3', '--depth-encoding', '16UC1'] + common) == 0
    assert weld_sim(['record', '--out', str(root / 'bags' / 'sidecar'), '--frames', '96', '--seed', '4',
                     '--storage', 'mcap', '--no-label-topic'] + common) == 0
    code = cli.main(['pipeline', str(root / 'bags'), '--dataset', str(root / 'ds'), '-o', str(root / 'run'),
                     '--epochs', '2', '--min-samples', '8', '--no-progress',
                     '--set', 'model.input_size=[64, 48]', '--set', 'train.threads=2',
                     '--set', 'train.batch_size=16', '--set', 'train.sample_images=2', *TOY_CLI])
    assert code == 0
    return root


def test_sim_bags_become_a_grouped_dataset(sim_run):
    m = load_manifest(sim_run / 'ds')
    assert m['stats']['frames'] == 240 and m['stats']['bags'] == 2
    sources = {Path(f['bag']).name: f['label_source'] for f in m['frames']}
    assert sources == {'topic': 'topic', 'sidecar': 'sidecar'}
    splits_of_weld: dict = {}
    for f in m['frames']:
        assert f['weld_id'].startswith('sim-')
        splits_of_weld.setdefault(f['weld_id'], set()).add(f['split'])
    assert len(splits_of_weld) == 60 and all(len(s) == 1 for s in splits_of_weld.values())
    # Labels agree with the renderer's own ground truth topic, frame by frame.
    from rosbags.rosbag2 import Reader
    from weld_training.bags import make_typestore
    from weld_vision_ros.ros.codec import header_stamp_ns as stamp_ns_of
    store = make_typestore()
    with Reader(sim_run / 'bags' / 'topic') as reader:
        conns = [c for c in reader.connections if c.topic == '/camera/ground_truth']
        truth = {stamp_ns_of(msg): (msg.defect_class, msg.weld_id)
                 for msg in (store.deserialize_cdr(raw, c.msgtype) for c, _, raw in reader.messages(conns))}
    ours = [(f['stamp_ns'], f['label'], f['weld_id']) for f in m['frames'] if Path(f['bag']).name == 'topic']
    assert len(ours) == 144 and all(truth[s] == (lab, w) for s, lab, w in ours)


def test_sim_model_exported_and_run_as_the_node_runs_it(sim_run):
    import onnxruntime as ort

    result = json.loads((sim_run / 'run' / 'pipeline.json').read_text())
    assert result['export']['parity']['passed'] and result['export']['parity']['max_abs_diff'] <= 1e-4
    sess = ort.InferenceSession(str(sim_run / 'run' / 'model.onnx'), providers=['CPUExecutionProvider'])
    contract = ModelContract.from_metadata(sess.get_modelmeta().custom_metadata_map)
    assert (contract.preprocess.input_width, contract.preprocess.input_height) == (64, 48)
    assert contract.preprocess.channels == 'rgbd'
    frames = list(iter_bag_frames(sim_run / 'bags' / 'sidecar'))[:24]
    assert contract.preprocess.crop == 'seam'       # the default config's seam strip
    x = np.stack([preprocess(f.rgb, f.depth_m, contract.preprocess, f.intrinsics) for f in frames])
    logits = sess.run([contract.output_name], {contract.input_name: x})[0]
    model, _ = load_checkpoint_model(sim_run / 'run' / 'best.pt')
    with torch.inference_mode():
        assert np.abs(logits - model(torch.from_numpy(x)).numpy()).max() <= 1e-4
    assert logits.shape == (24, 6) and np.isfinite(logits).all()
