"""Damaged training inputs: bags cut by a power cut are salvaged, every other bad file is one
clear error line naming it (weld_training.salvage, weld_training.bags, weld_training.cli)."""
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from test.helpers.training_toy import toy_frame
from weld_training import cli
from weld_training.bags import iter_bag_frames, write_bag

T0 = 1_700_000_000_000_000_000
DT = 33_333_333
N = 24
# 96x72 frames: ~35 KB each, so an mcap bag spans several 1 MiB chunks and a cut at 50 %
# leaves whole chunks behind, and the sqlite3 bag's images use overflow pages.
W, H = 96, 72


def _record(path: Path, storage: str, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(N):
        label = 'good' if (i // 4) % 2 == 0 else 'porosity'
        rgb, depth = toy_frame(label, rng, W, H)
        frames.append({'stamp_ns': T0 + seed * 10**12 + i * DT, 'rgb': rgb, 'depth_m': depth, 'label': label})
    labels = [{'stamp_ns': f['stamp_ns'], 'label': f['label'], 'weld_id': f'{path.name}-w{i // 4}'}
              for i, f in enumerate(frames) if i % 4 == 0]
    write_bag(path, frames, storage=storage, labels=labels)
    return frames


def _power_cut(bag: Path, fraction: float) -> Path:
    """What a power cut leaves: the storage file cut at `fraction` of its bytes, no metadata.yaml
    (rosbag2 writes it on close), and so for mcap no summary and no footer."""
    (bag / 'metadata.yaml').unlink()
    (storage_file,) = [p for p in bag.iterdir() if p.suffix in ('.db3', '.mcap')]
    size = storage_file.stat().st_size
    with open(storage_file, 'r+b') as f:
        f.truncate(int(size * fraction))
    return storage_file


@pytest.mark.parametrize('storage', ['sqlite3', 'mcap'])
@pytest.mark.parametrize('fraction', [0.5, 0.8])
def test_a_bag_cut_short_yields_its_whole_frames_in_order_bit_exact(tmp_path, storage, fraction):
    frames = _record(tmp_path / 'bag', storage, 1)
    storage_file = _power_cut(tmp_path / 'bag', fraction)
    warnings = []
    got = list(iter_bag_frames(tmp_path / 'bag', warn=warnings.append))
    # A prefix of the recording survives: at least a third of it (the cut is at half or later),
    # never a frame past the cut.
    assert N // 3 <= len(got) < N
    assert [f.stamp_ns for f in got] == [f['stamp_ns'] for f in frames[:len(got)]]
    for f, src in zip(got, frames):
        np.testing.assert_array_equal(f.rgb, src['rgb'])
        assert f.label == src['label']
    assert len(warnings) == 1 and str(storage_file) in warnings[0] and 'bytes' in warnings[0]
    assert 'cut short' in warnings[0]


def test_extract_salvages_cut_bags_and_reads_the_intact_ones_beside_them(tmp_path, capsys):
    intact = _record(tmp_path / 'intact', 'sqlite3', 1)
    cut_db = _record(tmp_path / 'cut_db', 'sqlite3', 2)
    cut_mcap = _record(tmp_path / 'cut_mcap', 'mcap', 3)
    db_file = _power_cut(tmp_path / 'cut_db', 0.5)
    mcap_file = _power_cut(tmp_path / 'cut_mcap', 0.5)

    rc = cli.main(['extract', str(tmp_path / 'intact'), str(tmp_path / 'cut_db'), str(tmp_path / 'cut_mcap'),
                   '--out', str(tmp_path / 'ds'), '--classes', 'good,porosity', '--min-samples', '1',
                   '--no-progress'])
    err = capsys.readouterr().err
    assert rc == 0, err
    warnings = [line for line in err.splitlines() if line.startswith('warning:')]
    assert len(warnings) == 2
    assert any(str(db_file) in w and 'bytes' in w for w in warnings)
    assert any(str(mcap_file) in w and 'bytes' in w for w in warnings)

    manifest = json.loads((tmp_path / 'ds' / 'manifest.json').read_text())
    by_bag = {}
    for fr in manifest['frames']:
        by_bag.setdefault(Path(fr['bag']).name, []).append(fr)
    assert len(by_bag['intact']) == N
    for name, src in (('cut_db', cut_db), ('cut_mcap', cut_mcap)):
        assert N // 3 <= len(by_bag[name]) < N
        by_stamp = {f['stamp_ns']: f for f in src}
        for fr in by_bag[name]:
            png = cv2.cvtColor(cv2.imread(str(tmp_path / 'ds' / fr['rgb'])), cv2.COLOR_BGR2RGB)
            np.testing.assert_array_equal(png, by_stamp[fr['stamp_ns']]['rgb'])
    assert len(manifest['stats']['salvaged']) == 2
    del intact


def _one_error_line(err: str, *names: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert 'Traceback' not in err and lines[0].startswith('weld-train ')
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]


def _extract(tmp_path, *bags, extra=()):
    return cli.main(['extract', *map(str, bags), '--out', str(tmp_path / 'ds'), '--classes', 'good,porosity',
                     '--min-samples', '1', '--no-progress', *extra])


def test_a_label_topic_of_another_type_is_one_line_naming_the_bag(tmp_path, capsys):
    _record(tmp_path / 'bag', 'mcap', 1)
    rc = _extract(tmp_path, tmp_path / 'bag', extra=['--set', 'data.topics.label=/camera/color/image_raw'])
    line = _one_error_line(capsys.readouterr().err, str(tmp_path / 'bag'))
    assert rc != 0 and 'sensor_msgs/msg/Image' in line


def test_a_bag_without_labels_is_one_line_naming_the_bag(tmp_path, capsys):
    write_bag(tmp_path / 'bag', [{'stamp_ns': T0, 'rgb': np.zeros((H, W, 3), np.uint8),
                                  'depth_m': np.ones((H, W), np.float32)}])
    rc = _extract(tmp_path, tmp_path / 'bag')
    _one_error_line(capsys.readouterr().err, str(tmp_path / 'bag'))
    assert rc != 0


@pytest.mark.parametrize('garbage', ['rosbag2_bagfile_information: [1, 2', 'just: a dict\n', '\x00\xff garbage'])
def test_garbage_metadata_yaml_alone_is_one_line_naming_it(tmp_path, capsys, garbage):
    (tmp_path / 'bag').mkdir()
    (tmp_path / 'bag' / 'metadata.yaml').write_text(garbage)
    rc = _extract(tmp_path, tmp_path / 'bag')
    _one_error_line(capsys.readouterr().err, str(tmp_path / 'bag' / 'metadata.yaml'))
    assert rc != 0


def test_garbage_metadata_yaml_beside_a_whole_storage_file_is_read_with_a_warning(tmp_path, capsys):
    _record(tmp_path / 'bag', 'sqlite3', 1)
    (tmp_path / 'bag' / 'metadata.yaml').write_text('rosbag2_bagfile_information:\n  version: 9\n')
    rc = _extract(tmp_path, tmp_path / 'bag')
    err = capsys.readouterr().err
    assert rc == 0, err
    (warning,) = [line for line in err.splitlines() if line.startswith('warning:')]
    assert str(tmp_path / 'bag' / 'metadata.yaml') in warning and 'complete' in warning
    assert json.loads((tmp_path / 'ds' / 'manifest.json').read_text())['stats']['frames'] == N


def test_a_storage_file_with_nothing_readable_is_one_line_naming_it(tmp_path, capsys):
    (tmp_path / 'bag').mkdir()
    (tmp_path / 'bag' / 'bag_0.mcap').write_bytes(b'\x89MCAP0\r\n' + b'\x01' * 5)
    rc = _extract(tmp_path, tmp_path / 'bag')
    _one_error_line(capsys.readouterr().err, str(tmp_path / 'bag' / 'bag_0.mcap'))
    assert rc != 0


@pytest.mark.parametrize('command', [['models', 'list'], ['status'], ['deploy', 'm1']])
def test_a_corrupt_registry_is_one_line_naming_the_file(tmp_path, capsys, command):
    registry = tmp_path / 'registry.sqlite'
    registry.write_bytes(b'SQLite format 3\x00' + bytes(range(256)) * 16)
    rc = cli.main([*command, '--registry', str(registry)])
    _one_error_line(capsys.readouterr().err, str(registry))
    assert rc != 0


def test_a_registry_that_is_not_sqlite_is_one_line_naming_the_file(tmp_path, capsys):
    registry = tmp_path / 'registry.sqlite'
    shutil.copyfile(__file__, registry)
    rc = cli.main(['models', 'list', '--registry', str(registry)])
    _one_error_line(capsys.readouterr().err, str(registry))
    assert rc != 0


@pytest.mark.parametrize('storage', ['sqlite3', 'mcap'])
def test_a_cut_storage_file_beside_its_metadata_yaml_is_salvaged_too(tmp_path, storage):
    """A file cut after the bag was closed (a copy interrupted, a disk error): metadata.yaml
    promises more than the file holds; rosbags cannot read it, the salvage reader can."""
    frames = _record(tmp_path / 'bag', storage, 1)
    (storage_file,) = [p for p in (tmp_path / 'bag').iterdir() if p.suffix in ('.db3', '.mcap')]
    with open(storage_file, 'r+b') as f:
        f.truncate(storage_file.stat().st_size * 6 // 10)
    warnings = []
    got = list(iter_bag_frames(tmp_path / 'bag', warn=warnings.append))
    assert N // 3 <= len(got) < N
    assert [f.stamp_ns for f in got] == [f['stamp_ns'] for f in frames[:len(got)]]
    assert len(warnings) == 1 and str(tmp_path / 'bag') in warnings[0], warnings
