"""Synthetic recordings (weld-sim record): bags read back by rosbags, bit-exact, counted right."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from rosbags.rosbag2 import Reader

from weld_vision_ros.core.classes import UnknownClassError
from weld_vision_ros.core.depth import encode_depth_16uc1
from weld_vision_ros.simulator.renderer import SyntheticWeldStream, default_intrinsics
from weld_vision_ros.ros.dataset_bag import (CAMERA_INFO_TOPIC, COLOR_TOPIC, DEPTH_TOPIC, GROUND_TRUTH_TOPIC,
                                         LABEL_TOPIC, SIDECAR_NAME, DatasetBagError, DatasetBagWriter,
                                         LabelSpan, make_typestore, read_sidecar, write_sidecar)
from weld_vision_ros.simulator.sim_record import RecordOptions, main, parse_class_weights, record

STORE = make_typestore()
W, H = 160, 120


def read_bag(path: Path) -> dict:
    """Every message of the bag, deserialized, by topic, in bag order, with bag times."""
    out: dict = {}
    with Reader(path) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
        for conn, t, raw in reader.messages():
            out.setdefault(conn.topic, []).append((t, STORE.deserialize_cdr(raw, conn.msgtype)))
    return {'messages': out, 'counts': counts}


def stamp_ns(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


@pytest.mark.parametrize('storage', ['sqlite3', 'mcap'])
def test_recording_reads_back_bit_exact_with_the_right_counts(tmp_path: Path, storage: str) -> None:
    opts = RecordOptions(out=tmp_path / 'bag', frames=14, storage=storage, seed=4, frames_per_weld=4,
                         width=W, height=H, rate_hz=20.0)
    summary = record(opts)
    bag = read_bag(opts.out)
    msgs, counts = bag['messages'], bag['counts']
    assert counts[COLOR_TOPIC] == counts[DEPTH_TOPIC] == counts[CAMERA_INFO_TOPIC] == 14
    assert counts[GROUND_TRUTH_TOPIC] == 14
    assert counts[LABEL_TOPIC] == 4 == sum(summary.welds.values())      # welds of 4, 4, 4, 2 frames

    # The same seed renders the same frames: compare pixel for pixel.
    stream = SyntheticWeldStream(4, default_intrinsics(W, H), frames_per_weld=4)
    expected_labels = []
    for i in range(14):
        frame, new_weld = stream.next_frame()
        t_color, color = msgs[COLOR_TOPIC][i]
        _, depth = msgs[DEPTH_TOPIC][i]
        _, info = msgs[CAMERA_INFO_TOPIC][i]
        _, truth = msgs[GROUND_TRUTH_TOPIC][i]
        stamp = opts.start_ns + round(i * 1e9 / 20.0)
        assert t_color == stamp == stamp_ns(color) == stamp_ns(depth) == stamp_ns(info) == stamp_ns(truth)
        assert color.encoding == 'rgb8' and (color.height, color.width, color.step) == (H, W, 3 * W)
        assert np.array_equal(np.asarray(color.data).reshape(H, W, 3), frame.rgb)
        assert depth.encoding == '32FC1'
        depth_m = np.asarray(depth.data).view(np.float32).reshape(H, W)
        assert np.array_equal(depth_m, frame.depth_m, equal_nan=True)
        assert np.allclose(info.k, frame.intrinsics.k)
        assert truth.defect_class == frame.truth.defect_class and truth.weld_id == frame.truth.weld_id
        assert truth.width_mm == pytest.approx(frame.truth.width_mm)
        assert len(truth.regions) == len(frame.truth.regions)
        if new_weld:
            expected_labels.append((stamp, frame.truth.defect_class, frame.truth.weld_id))
    labels = [(stamp_ns(m), m.label, m.weld_id) for _, m in msgs[LABEL_TOPIC]]
    assert labels == expected_labels
    assert all(m.source == 'sim' for _, m in msgs[LABEL_TOPIC])
    # Counts per class: the summary, the labels and the truth agree.
    by_truth = Counter(m.defect_class for _, m in msgs[GROUND_TRUTH_TOPIC])
    assert summary.counts == by_truth and summary.frames == 14
    assert summary.welds == Counter(label for _, label, _ in labels)


def test_same_seed_same_bag_bytes(tmp_path: Path) -> None:
    def payloads(path: Path) -> list:
        with Reader(path) as reader:
            return [(c.topic, t, bytes(raw)) for c, t, raw in reader.messages()]

    for name in ('a', 'b'):
        record(RecordOptions(out=tmp_path / name, frames=5, storage='mcap', seed=9, width=W, height=H))
    assert payloads(tmp_path / 'a') == payloads(tmp_path / 'b')
    record(RecordOptions(out=tmp_path / 'c', frames=5, storage='mcap', seed=10, width=W, height=H))
    assert payloads(tmp_path / 'a') != payloads(tmp_path / 'c')


def test_depth_in_millimetres(tmp_path: Path) -> None:
    opts = RecordOptions(out=tmp_path / 'bag', frames=3, storage='sqlite3', seed=2, width=W, height=H,
                         depth_encoding='16UC1')
    record(opts)
    msgs = read_bag(opts.out)['messages']
    stream = SyntheticWeldStream(2, default_intrinsics(W, H))
    for (_, depth) in msgs[DEPTH_TOPIC]:
        frame, _ = stream.next_frame()
        assert depth.encoding == '16UC1' and depth.step == 2 * W
        raw = np.asarray(depth.data).view(np.uint16).reshape(H, W)
        assert np.array_equal(raw, encode_depth_16uc1(frame.depth_m))
        assert 150 <= np.median(raw[raw > 0]) <= 300     # millimetres


def test_sidecar_round_trip_and_labels_only_in_the_sidecar(tmp_path: Path) -> None:
    opts = RecordOptions(out=tmp_path / 'bag', frames=11, storage='mcap', seed=5, frames_per_weld=3,
                         width=W, height=H, rate_hz=10.0, label_topic=False, sidecar=True)
    summary = record(opts)
    assert summary.sidecar == opts.out / SIDECAR_NAME
    spans = read_sidecar(summary.sidecar)
    assert len(spans) == 4
    bag = read_bag(opts.out)
    assert LABEL_TOPIC not in bag['counts']              # labels only in the sidecar
    truths = bag['messages'][GROUND_TRUTH_TOPIC]
    for _, truth in truths:
        holding = [s for s in spans if s.start_ns <= stamp_ns(truth) <= s.end_ns]
        assert len(holding) == 1
        assert (holding[0].label, holding[0].weld_id) == (truth.defect_class, truth.weld_id)
    # Spans do not overlap and each covers its weld's frames exactly.
    assert all(a.end_ns < b.start_ns for a, b in zip(spans, spans[1:]))
    assert [s.end_ns - s.start_ns for s in spans] == [200_000_000] * 3 + [100_000_000]
    # Writing and reading again gives the same spans.
    again = write_sidecar(tmp_path / 'copy.yaml', spans)
    assert read_sidecar(again) == spans
    entries = yaml.safe_load(again.read_text())
    assert set(entries[0]) == {'start_ns', 'end_ns', 'label', 'weld_id'}


def test_sidecar_refuses_unknown_labels_and_bad_files(tmp_path: Path) -> None:
    bad = tmp_path / 'bad.yaml'
    write_sidecar(bad, [LabelSpan(0, 10, 'good', 'w1')])
    bad.write_text(bad.read_text().replace('good', 'slag'))
    with pytest.raises(UnknownClassError, match='valid classes'):
        read_sidecar(bad)
    bad.write_text('start_ns: 1\n')
    with pytest.raises(DatasetBagError, match='list'):
        read_sidecar(bad)


def test_class_choice_reaches_the_bag(tmp_path: Path) -> None:
    opts = RecordOptions(out=tmp_path / 'bag', frames=12, storage='sqlite3', seed=1, frames_per_weld=2,
                         width=W, height=H, class_weights=parse_class_weights(['crack', 'gap:3']))
    summary = record(opts)
    assert set(summary.counts) <= {'crack', 'gap'} and sum(summary.counts.values()) == 12
    labels = {m.label for _, m in read_bag(opts.out)['messages'][LABEL_TOPIC]}
    assert labels == set(summary.counts)


def test_cli_records_and_prints_counts(tmp_path: Path, capsys) -> None:
    out = tmp_path / 'cli_bag'
    assert main(['record', '--out', str(out), '--frames', '6', '--storage', 'sqlite3', '--seed', '3',
                 '--frames-per-weld', '2', '--width', str(W), '--height', str(H), '--sidecar']) == 0
    captured = capsys.readouterr()
    assert 'wrote 6 frames of 3 welds' in captured.out
    table = {line.split()[0]: int(line.split()[1]) for line in captured.out.splitlines()
             if line.split() and line.split()[0] in ('good', 'porosity', 'undercut', 'spatter', 'gap',
                                                     'crack', 'total')}
    truths = read_bag(out)['messages'][GROUND_TRUTH_TOPIC]
    by_class = Counter(m.defect_class for _, m in truths)
    assert table['total'] == 6 and all(table[k] == by_class.get(k, 0) for k in by_class)
    assert '6/6 frames' in captured.err                 # progress line
    assert (out / SIDECAR_NAME).is_file()
    # An existing bag is never overwritten.
    with pytest.raises(SystemExit):
        main(['record', '--out', str(out), '--frames', '1'])
    assert 'exists already' in capsys.readouterr().err


@pytest.mark.parametrize('bad, reason', [
    (['--frames', '0'], 'frames must be >= 1'),
    (['--frames', '2', '--classes', 'slag'], 'valid classes'),
    (['--frames', '2', '--classes', 'good:-1'], '>= 0'),
    (['--frames', '2', '--rate-hz', '0'], 'rate_hz'),
])
def test_cli_refuses_bad_options(tmp_path: Path, capsys, bad: list, reason: str) -> None:
    with pytest.raises(SystemExit):
        main(['record', '--out', str(tmp_path / 'x'), *bad])
    assert reason in capsys.readouterr().err
    assert not (tmp_path / 'x').exists()


def test_writer_refuses_unknown_labels_and_frames_without_label(tmp_path: Path) -> None:
    intr = default_intrinsics(W, H)
    rgb = np.zeros((H, W, 3), np.uint8)
    depth = np.full((H, W), 0.2, np.float32)
    with DatasetBagWriter(tmp_path / 'bag', 'sqlite3') as bag:
        with pytest.raises(DatasetBagError, match='label'):
            bag.write_frame(1, rgb, depth, intr)
        with pytest.raises(UnknownClassError):
            bag.write_label(1, 'slag', 'w', 'operator')
        bag.write_label(1, 'good', 'w', 'operator')
        bag.write_frame(1, rgb, depth, intr)
        assert bag.count_list() == [1, 0, 0, 0, 0, 0]
    with pytest.raises(DatasetBagError, match='exists'):
        DatasetBagWriter(tmp_path / 'bag', 'mcap')
    with pytest.raises(DatasetBagError, match='storage'):
        DatasetBagWriter(tmp_path / 'other', 'rosbag1')
