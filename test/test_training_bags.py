"""weld_training.bags: reading rosbag2 (sqlite3, mcap) without ROS, pairing, labels."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from test.helpers.training_toy import record_toy_bag, toy_frame
from weld_training import bags
from weld_vision_ros.ros import codec
from weld_training.bags import BagError, ReadStats, find_bags, iter_bag_frames, make_typestore, write_bag
from weld_vision_ros.core.classes import UnknownClassError

T0 = 1_700_000_000_000_000_000
DT = 33_333_333


def _frames(n, rng, label='good', t0=T0, w=40, h=30):
    out = []
    for i in range(n):
        rgb, depth = toy_frame(label, rng, w, h)
        out.append({'stamp_ns': t0 + i * DT, 'rgb': rgb, 'depth_m': depth})
    return out


@pytest.mark.parametrize('storage,depth_encoding,color_encoding',
                         [('sqlite3', '16UC1', 'rgb8'), ('mcap', '32FC1', 'bgr8')])
def test_round_trip_pixels_and_labels(tmp_path, storage, depth_encoding, color_encoding):
    rng = np.random.default_rng(1)
    frames = _frames(6, rng)
    labels = [{'stamp_ns': T0 + DT, 'label': 'porosity', 'weld_id': 'w1'},
              {'stamp_ns': T0 + 3 * DT, 'label': 'crack', 'weld_id': 'w2'}]
    write_bag(tmp_path / 'bag', frames, storage=storage, labels=labels,
              depth_encoding=depth_encoding, color_encoding=color_encoding)
    stats = ReadStats()
    got = list(iter_bag_frames(tmp_path / 'bag', stats=stats))
    # Frame 0 precedes the first label; 1-2 take 'porosity' (label stamp == frame stamp counts), 3-5 'crack'.
    assert [f.label for f in got] == ['porosity', 'porosity', 'crack', 'crack', 'crack']
    assert [f.weld_id for f in got] == ['w1', 'w1', 'w2', 'w2', 'w2']
    assert stats.skipped['no label'] == 1 and stats.emitted == 5
    for f, src in zip(got, frames[1:]):
        assert f.stamp_ns == src['stamp_ns']
        np.testing.assert_array_equal(f.rgb, src['rgb'])
        finite = np.isfinite(src['depth_m'])
        np.testing.assert_array_equal(np.isfinite(f.depth_m), finite)
        tol = 0.0005 if depth_encoding == '16UC1' else 0.0
        assert np.abs(f.depth_m[finite] - src['depth_m'][finite]).max() <= tol
        assert f.intrinsics is not None and (f.intrinsics.width, f.intrinsics.height) == (40, 30)
        assert f.bag == str(tmp_path / 'bag') and f.label_source == 'topic'


def test_stamp_tolerance(tmp_path):
    rng = np.random.default_rng(2)
    frames = _frames(4, rng)
    store = make_typestore()
    # Write color and depth 2 ms apart by writing two bags' worth of topics by hand.
    write_bag(tmp_path / 'aligned', frames, labels=[{'stamp_ns': T0, 'label': 'good', 'weld_id': 'w'}])
    shifted = tmp_path / 'shifted'
    from rosbags.rosbag2 import Reader, Writer
    with Reader(tmp_path / 'aligned') as reader, Writer(shifted, version=9) as writer:
        conns = {c.id: writer.add_connection(c.topic, c.msgtype, typestore=store) for c in reader.connections}
        for conn, t, raw in reader.messages():
            if conn.topic == bags.DEPTH_TOPIC:
                msg = store.deserialize_cdr(raw, conn.msgtype)
                ns = codec.header_stamp_ns(msg) + 2_000_000
                msg.header.stamp.sec, msg.header.stamp.nanosec = ns // 10**9, ns % 10**9
                raw = store.serialize_cdr(msg, conn.msgtype)
            writer.write(conns[conn.id], t, raw)
    exact = ReadStats()
    assert list(iter_bag_frames(shifted, stats=exact)) == []
    assert exact.skipped['no depth partner'] == 4
    loose = list(iter_bag_frames(shifted, tolerance_ns=3_000_000))
    assert len(loose) == 4 and [f.stamp_ns for f in loose] == [f['stamp_ns'] for f in frames]


def test_sidecar_labels(tmp_path):
    rng = np.random.default_rng(3)
    bag, spans = record_toy_bag(tmp_path / 'bag', [('w1', 'gap'), ('w2', 'spatter')], 3, rng, label_topic=False)
    # Without labels anywhere the bag is refused with a message saying what to do.
    with pytest.raises(BagError, match='no labels'):
        list(iter_bag_frames(bag))
    side = tmp_path / 'labels.yaml'
    spans[1]['end_ns'] -= DT  # the last frame of w2 falls outside every span
    side.write_text(yaml.safe_dump(spans))
    stats = ReadStats()
    got = list(iter_bag_frames(bag, sidecar=side, stats=stats))
    assert [(f.label, f.weld_id) for f in got] == [('gap', 'w1')] * 3 + [('spatter', 'w2')] * 2
    assert stats.skipped['no label'] == 1 and all(f.label_source == 'sidecar' for f in got)
    # A labels.yaml inside the bag folder is found on its own.
    (bag / 'labels.yaml').write_text(side.read_text())
    assert len(list(iter_bag_frames(bag))) == 5
    with pytest.raises(BagError, match='label_source must be one of'):
        list(iter_bag_frames(bag, label_source='guess'))


def test_bad_labels_are_refused(tmp_path):
    side = tmp_path / 'labels.yaml'
    side.write_text(yaml.safe_dump([{'start_ns': 10, 'end_ns': 5, 'label': 'good'}]))
    with pytest.raises(BagError, match='before start_ns'):
        bags.load_sidecar(side)
    side.write_text(yaml.safe_dump([{'start_ns': 1, 'end_ns': 5, 'label': 'burn'}]))
    with pytest.raises(UnknownClassError, match='valid classes are: good, porosity'):
        bags.load_sidecar(side)
    rng = np.random.default_rng(4)
    write_bag(tmp_path / 'b', _frames(2, rng), labels=[{'stamp_ns': T0, 'label': 'burn', 'weld_id': 'w'}])
    with pytest.raises(UnknownClassError):
        list(iter_bag_frames(tmp_path / 'b'))


def test_find_bags(tmp_path):
    rng = np.random.default_rng(5)
    for name in ('x/one', 'x/deeper/two'):
        write_bag(tmp_path / name, _frames(1, rng), labels=[{'stamp_ns': T0, 'label': 'good'}],
                  storage='mcap' if 'two' in name else 'sqlite3')
    found = find_bags([tmp_path / 'x', tmp_path / 'x' / 'one'])
    assert [p.name for p in found] == ['two', 'one'] or [p.name for p in found] == ['one', 'two']
    assert len(found) == 2  # the same bag named twice counts once
    mcap_file = next((tmp_path / 'x' / 'deeper' / 'two').glob('*.mcap'))
    assert find_bags([mcap_file]) == [(tmp_path / 'x' / 'deeper' / 'two').resolve()]
    (tmp_path / 'empty').mkdir()
    with pytest.raises(BagError, match='no rosbag2 recording'):
        find_bags([tmp_path / 'empty'])
    with pytest.raises(BagError, match='no such bag'):
        find_bags([tmp_path / 'missing'])


def test_our_types_come_from_the_msg_files():
    store = make_typestore()
    fields = [name for name, _ in store.fielddefs['weld_vision_ros/msg/WeldLabel'][1]]
    text = (Path(__file__).resolve().parent.parent / 'msg' / 'WeldLabel.msg').read_text()
    declared = [line.split()[1] for line in text.splitlines() if line.strip() and not line.startswith('#')]
    assert fields == declared == ['header', 'label', 'weld_id', 'source']
    with pytest.raises(BagError, match='cannot find the weld_vision_ros .msg files'):
        make_typestore(Path('/nonexistent'))


class _Img:
    def __init__(self, h, w, encoding, step, data, big=0):
        self.height, self.width, self.encoding, self.step, self.data, self.is_bigendian = h, w, encoding, step, data, big


def test_decode_padded_rows_and_big_endian_depth():
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    padded = np.zeros((2, 12), np.uint8)
    padded[:, :9] = rgb.reshape(2, 9)
    np.testing.assert_array_equal(codec.decode_color(_Img(2, 3, 'rgb8', 12, padded.ravel())), rgb)
    np.testing.assert_array_equal(codec.decode_color(_Img(2, 3, 'bgr8', 12, padded.ravel())), rgb[..., ::-1])
    mm = np.array([[300, 0], [1200, 65535]], np.uint16)
    depth = codec.decode_depth_image(_Img(2, 2, '16UC1', 4, np.frombuffer(mm.astype('>u2').tobytes(), np.uint8), 1))
    assert depth[0, 0] == pytest.approx(0.3) and np.isnan(depth[0, 1]) and depth[1, 0] == pytest.approx(1.2)
    color = _Img(2, 3, 'rgb8', 12, padded.ravel())
    with pytest.raises(BagError, match='not supported'):
        bags.decode_frame(_Img(1, 1, 'yuv422', 2, np.zeros(2, np.uint8)), color)
    with pytest.raises(BagError, match='data holds 10 bytes'):
        bags.decode_frame(_Img(2, 3, 'rgb8', 9, np.zeros(10, np.uint8)), color)


def test_training_refuses_mono8_colour_as_the_nodes_do(tmp_path):
    # One decision for both: a grey image repeated three times is no input the rules or a
    # model were checked on, so training skips it as the nodes drop it.
    grey = _Img(2, 3, 'mono8', 3, np.zeros(6, np.uint8))
    depth = _Img(2, 3, '32FC1', 12, np.ones(6, np.float32).view(np.uint8))
    with pytest.raises(BagError, match="'mono8' is not supported"):
        bags.decode_frame(grey, depth)
    with pytest.raises(codec.ImageEncodingError, match="'mono8' is not supported"):
        codec.decode_color(grey)


def test_weld_training_never_imports_rclpy(tmp_path):
    code = ('import sys, weld_training.cli, weld_training.bags, weld_training.dataset, weld_training.train, '
            'weld_training.export, weld_training.evaluate\n'
            'bad = [m for m in sys.modules if m.startswith("rclpy") or m.startswith("weld_vision_ros.msg") '
            'or m.endswith("_msgs.msg") or m.startswith("sensor_msgs")]\n'
            'print(bad); sys.exit(1 if bad else 0)')
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
