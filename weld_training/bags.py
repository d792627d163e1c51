"""Reading rosbag2 recordings (sqlite3 or mcap) into labelled RGB-D frames, without ROS.

Bags are read with `rosbags`; our own message types (weld_vision_ros/msg/*) are
registered from the .msg text shipped with the package, so no generated message code
is needed. Color, aligned depth and camera_info are paired by header stamp (exact by
default, or within a tolerance); each frame takes the latest label at or before its
stamp, from the label topic or from a sidecar YAML file of time ranges.

Decoding is the frame codec's (weld_vision_ros.ros.codec), the one the nodes use, so a
frame decodes the same in training and on the cell. `write_bag` records bags from arrays
for tests with the one dataset writer (weld_vision_ros.ros.dataset_bag).
"""
from __future__ import annotations

import bisect
import sqlite3
import struct
import sys
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import yaml

from weld_vision_ros.core.camera import Intrinsics
from weld_vision_ros.core.classes import DEFAULT_CLASS_NAMES, check_class_name
from weld_vision_ros.core.depth import DepthError
from weld_vision_ros.ros import codec, dataset_bag
from weld_vision_ros.ros.dataset_bag import (CAMERA_INFO_TOPIC, COLOR_TOPIC, DEPTH_TOPIC, LABEL_TOPIC,
                                             SIDECAR_NAME, STORAGES, DatasetBagError, DatasetBagWriter,
                                             LabelSpan, read_sidecar)
from weld_vision_ros.ros.sync import StampSynchronizer

from .salvage import STORAGE_SUFFIXES, SalvageError, SalvageReader, storage_files

LABEL_SOURCES = ('auto', 'topic', 'sidecar')


class BagError(ValueError):
    """A bag, a label file or a message that cannot be used for training."""


@dataclass(frozen=True)
class Topics:
    """Topic names to read (defaults: the RealSense driver's and ours)."""

    color: str = COLOR_TOPIC
    depth: str = DEPTH_TOPIC
    camera_info: str = CAMERA_INFO_TOPIC
    label: str = LABEL_TOPIC


@dataclass(frozen=True)
class LabeledFrame:
    """One paired, labelled RGB-D frame read from a bag.

    rgb: uint8 (H, W, 3) RGB. depth_m: float32 (H, W) [m], NaN = no return.
    intrinsics: from the matching camera_info (None when the bag has none).
    """

    rgb: np.ndarray
    depth_m: np.ndarray
    intrinsics: Optional[Intrinsics]
    stamp_ns: int
    label: str
    weld_id: str
    bag: str
    label_source: str


@dataclass
class ReadStats:
    """What happened to the frames of one or more bags."""

    color_messages: int = 0
    depth_messages: int = 0
    paired: int = 0
    emitted: int = 0
    skipped: Counter = field(default_factory=Counter)
    salvaged: list = field(default_factory=list)   # one line per bag read past damage (see warn_stderr)

    def merge(self, other: 'ReadStats') -> None:
        self.color_messages += other.color_messages
        self.depth_messages += other.depth_messages
        self.paired += other.paired
        self.emitted += other.emitted
        self.skipped.update(other.skipped)
        self.salvaged.extend(other.salvaged)


def warn_stderr(message: str) -> None:
    """How a damaged bag that was still read is reported by default: one line on stderr."""
    print(f'warning: {message}', file=sys.stderr, flush=True)


# --- message types ---------------------------------------------------------------------

def make_typestore(msg_dir: Optional[Path] = None):
    """A rosbags typestore with the ROS 2 standard types and ours from msg/*.msg (the one
    `weld-sim record` writes with); a missing msg folder is a BagError."""
    try:
        return dataset_bag.make_typestore(msg_dir)
    except DatasetBagError as exc:
        raise BagError(f'{exc}; install the package or pass the msg folder') from None


# --- finding bags and label files ------------------------------------------------------

def _is_bag_folder(p: Path) -> bool:
    return (p / 'metadata.yaml').is_file() or bool(storage_files(p))


def find_bags(paths: Sequence[str | Path]) -> list[Path]:
    """Bag folders named by `paths`: bags, their files, or folders of bags. A folder with a
    storage file (.mcap, .db3) but no metadata.yaml (a recording cut by a power cut) is a bag."""
    bags: list[Path] = []
    for p in (Path(p) for p in paths):
        if not p.exists():
            raise BagError(f'no such bag or folder: {p}')
        if p.is_file():
            p = p.parent
        if _is_bag_folder(p):
            bags.append(p)
            continue
        inner = sorted({m.parent for m in p.rglob('*')
                        if m.is_file() and (m.name == 'metadata.yaml' or m.suffix in STORAGE_SUFFIXES)})
        if not inner:
            raise BagError(f'{p} holds no rosbag2 recording (no metadata.yaml, .mcap or .db3 below it)')
        bags.extend(inner)
    unique = list(dict.fromkeys(b.resolve() for b in bags))
    return unique


def load_sidecar(path: str | Path, class_names: Sequence[str] = DEFAULT_CLASS_NAMES) -> list[LabelSpan]:
    """Read a sidecar label file: a YAML list of {start_ns, end_ns, label, weld_id}; the
    format `weld-sim record` writes (weld_vision_ros.ros.dataset_bag), read by the same code."""
    try:
        return read_sidecar(path, class_names)
    except DatasetBagError as exc:
        raise BagError(str(exc)) from None


class LabelTimeline:
    """Labels by time: the latest label at or before a stamp (topic) or the span holding it."""

    def __init__(self, stamps_ns: Sequence[int] = (), labels: Sequence[tuple[str, str]] = (),
                 spans: Sequence[LabelSpan] = ()) -> None:
        order = np.argsort(np.asarray(stamps_ns, dtype=np.int64), kind='stable')
        self._stamps = [int(stamps_ns[i]) for i in order]
        self._labels = [labels[i] for i in order]
        self._spans = sorted(spans, key=lambda s: s.start_ns)
        self._span_starts = [s.start_ns for s in self._spans]

    def __len__(self) -> int:
        return len(self._stamps) + len(self._spans)

    def lookup(self, stamp_ns: int) -> Optional[tuple[str, str]]:
        """(label, weld_id) for a frame stamp, or None when no label covers it."""
        if self._spans:
            i = bisect.bisect_right(self._span_starts, stamp_ns) - 1
            while i >= 0:  # latest-starting span that still covers the stamp
                s = self._spans[i]
                if s.start_ns <= stamp_ns <= s.end_ns:
                    return s.label, s.weld_id
                i -= 1
            return None
        i = bisect.bisect_right(self._stamps, stamp_ns) - 1
        return self._labels[i] if i >= 0 else None


# --- decoding --------------------------------------------------------------------------

def decode_frame(color_msg, depth_msg, depth_scale_m: float = 0.001) -> tuple[np.ndarray, np.ndarray]:
    """(RGB uint8, depth float32 [m]) of a color/depth message pair, decoded by the codec the
    nodes use; raises BagError for an image the nodes would drop too."""
    try:
        return codec.decode_color(color_msg), codec.decode_depth_image(depth_msg, depth_scale_m)
    except (codec.ImageEncodingError, DepthError) as exc:
        raise BagError(str(exc)) from None


# --- reading ---------------------------------------------------------------------------

# Errors a reader of a damaged file can raise while reading it (rosbags wraps most in ReaderError).
_READ_ERRORS = (KeyError, TypeError, ValueError, OSError, EOFError, sqlite3.DatabaseError, struct.error)


def _metadata_problem(bag: Path) -> Optional[str]:
    """Why the bag's metadata.yaml cannot be used (None when it looks like rosbag2's), without
    trusting any key in it."""
    path = bag / 'metadata.yaml'
    if not path.is_file():
        return f'{path} is missing (the recorder never closed the bag)'
    try:
        doc = yaml.safe_load(path.read_text(errors='replace'))
    except (OSError, yaml.YAMLError) as exc:
        return f'{path} is not YAML ({str(exc).splitlines()[0]})'
    info = doc.get('rosbag2_bagfile_information') if isinstance(doc, dict) else None
    need = ('version', 'storage_identifier', 'relative_file_paths', 'topics_with_message_count')
    if not isinstance(info, dict) or any(k not in info for k in need):
        return f'{path} is not rosbag2 metadata (needs rosbag2_bagfile_information with {", ".join(need)})'
    return None


@contextmanager
def open_bag(bag: Path, warn: Optional[Callable[[str], None]] = warn_stderr,
             stats: Optional[ReadStats] = None):
    """A reader of the bag folder: rosbags' when the bag is whole; else a SalvageReader over its
    storage files, which reads every whole message up to the damage (a cut file, no
    metadata.yaml, garbage metadata.yaml), reported through `warn` and `stats.salvaged`.
    Raises BagError naming the file when nothing can be read."""
    from rosbags.rosbag2 import Reader, ReaderError

    problem = _metadata_problem(bag)
    if problem is None:
        reader = Reader(bag)
        try:
            reader.open()
        except (ReaderError, *_READ_ERRORS) as exc:
            problem = f'rosbags cannot open {bag} ({exc})'
        else:
            try:
                yield reader
            finally:
                reader.close()
            return
    files = storage_files(bag)
    if not files:
        raise BagError(f'{problem}, and {bag} holds no .mcap or .db3 file to read')
    try:
        salvage = SalvageReader(files)
    except (SalvageError, *_READ_ERRORS) as exc:
        raise BagError(f'{exc} ({problem})') from None
    try:
        for r in salvage.reports:
            line = f'{problem}; {r.describe()}' + ('' if r.complete else '; salvaged up to the last whole message')
            if stats is not None:
                stats.salvaged.append(line)
            if warn is not None:
                warn(line)
        yield salvage
    finally:
        salvage.close()


def _messages(reader, connections, bag: Path, warn: Optional[Callable[[str], None]], stats: Optional[ReadStats]):
    """reader.messages(connections), ending with a warning (not an exception) at damage found
    while reading: every message before it is kept."""
    from rosbags.rosbag2 import ReaderError

    n = 0
    it = reader.messages(connections=connections)
    while True:
        try:
            item = next(it)
        except StopIteration:
            return
        except (ReaderError, *_READ_ERRORS) as exc:
            line = f'{bag}: stopped reading after {n} messages: {exc}; the messages before it are kept'
            if stats is not None:
                stats.salvaged.append(line)
            if warn is not None:
                warn(line)
            return
        n += 1
        yield item


def count_color_frames(bag: Path, topics: Topics = Topics()) -> int:
    """Number of color messages in a bag (from its index, or from the whole messages of a
    damaged one; no message is decoded)."""
    with open_bag(Path(bag), warn=None) as reader:
        return sum(c.msgcount for c in reader.connections if c.topic == topics.color)


def read_label_timeline(bag: Path, reader, typestore, topics: Topics, label_source: str,
                        sidecar: Optional[Path], class_names: Sequence[str],
                        warn: Optional[Callable[[str], None]] = None,
                        stats: Optional[ReadStats] = None) -> tuple[LabelTimeline, str]:
    """The labels of one bag and where they came from ('sidecar' or 'topic')."""
    if label_source not in LABEL_SOURCES:
        raise BagError(f'label_source must be one of {", ".join(LABEL_SOURCES)}, got {label_source!r}')
    side = Path(sidecar) if sidecar else (bag / SIDECAR_NAME if (bag / SIDECAR_NAME).is_file() else None)
    if label_source == 'sidecar' or (label_source == 'auto' and side is not None):
        if side is None:
            raise BagError(f'{bag}: label_source is sidecar but there is no {SIDECAR_NAME} '
                           f'in the bag and no label file was given')
        return LabelTimeline(spans=load_sidecar(side, class_names)), 'sidecar'
    conns = [c for c in reader.connections if c.topic == topics.label]
    wrong = sorted({c.msgtype for c in conns} - {dataset_bag.LABEL_TYPE})
    if wrong:
        raise BagError(f'{bag}: label topic {topics.label} carries {", ".join(wrong)}, not '
                       f'{dataset_bag.LABEL_TYPE}; name the label topic (data.topics.label) or pass a label file')
    stamps, labels = [], []
    for conn, _t, raw in _messages(reader, conns, bag, warn, stats):
        try:
            msg = typestore.deserialize_cdr(raw, conn.msgtype)
        except Exception as exc:  # noqa: BLE001 - a damaged message: rosbags raises many kinds
            raise BagError(f'{bag}: a label message on {topics.label} cannot be decoded ({exc})') from None
        check_class_name(msg.label, class_names)
        stamps.append(codec.header_stamp_ns(msg))
        labels.append((msg.label, msg.weld_id))
    if not stamps:
        raise BagError(f'{bag}: no labels: topic {topics.label} is empty or missing and there is no '
                       f'{SIDECAR_NAME} sidecar; record labels or pass a label file')
    return LabelTimeline(stamps, labels), 'topic'


def iter_bag_frames(bag: str | Path, *, topics: Topics = Topics(), tolerance_ns: int = 0,
                    label_source: str = 'auto', sidecar: Optional[str | Path] = None,
                    class_names: Sequence[str] = DEFAULT_CLASS_NAMES, depth_scale_m: float = 0.001,
                    typestore=None, stats: Optional[ReadStats] = None,
                    warn: Optional[Callable[[str], None]] = warn_stderr) -> Iterator[LabeledFrame]:
    """Yield the labelled, paired frames of one bag in stamp order.

    tolerance_ns: 0 pairs color and depth with identical stamps only; more pairs the
    nearest ones at most that far apart. depth_scale_m: metres per unit of 16UC1 depth.
    Frames without a label, a depth partner or a decodable image are counted in
    `stats.skipped` and left out. A damaged bag (cut short, no or garbage metadata.yaml) is
    read up to its last whole message, reported through `warn` and in `stats.salvaged`.
    """
    bag = Path(bag)
    store = typestore or make_typestore()
    stats = stats if stats is not None else ReadStats()
    with open_bag(bag, warn, stats) as reader:
        timeline, source = read_label_timeline(bag, reader, store, topics, label_source,
                                               Path(sidecar) if sidecar else None, class_names, warn, stats)
        info_conns = [c for c in reader.connections if c.topic == topics.camera_info]
        infos: list[tuple[int, Intrinsics]] = []
        for conn, _t, raw in _messages(reader, info_conns, bag, None, None):
            try:
                msg = store.deserialize_cdr(raw, conn.msgtype)
                infos.append((codec.header_stamp_ns(msg), codec.intrinsics_from_camera_info(msg)))
            except Exception:  # noqa: BLE001 - a damaged camera_info: the frame falls back to the latest one
                stats.skipped['undecodable camera_info'] += 1
        infos.sort(key=lambda x: x[0])
        info_stamps = [s for s, _ in infos]

        image_conns = [c for c in reader.connections if c.topic in (topics.color, topics.depth)]
        if not any(c.topic == topics.color for c in image_conns):
            raise BagError(f'{bag}: no color topic {topics.color}; topics are '
                           f'{", ".join(sorted({c.topic for c in reader.connections}))}')
        if not any(c.topic == topics.depth for c in image_conns):
            raise BagError(f'{bag}: no depth topic {topics.depth}')
        sync: StampSynchronizer = StampSynchronizer(tolerance_ns=tolerance_ns, queue_size=60)
        n_color = n_paired = 0
        for conn, _t, raw in _messages(reader, image_conns, bag, warn, stats):
            try:
                msg = store.deserialize_cdr(raw, conn.msgtype)
            except Exception:  # noqa: BLE001 - a damaged message is one lost frame, not a lost bag
                stats.skipped['undecodable message'] += 1
                continue
            if conn.topic == topics.color:
                stats.color_messages += 1
                n_color += 1
                pair = sync.add_color(codec.header_stamp_ns(msg), msg)
            else:
                stats.depth_messages += 1
                pair = sync.add_depth(codec.header_stamp_ns(msg), msg)
            if pair is None:
                continue
            stats.paired += 1
            n_paired += 1
            labelled = timeline.lookup(pair.stamp_ns)
            if labelled is None:
                stats.skipped['no label'] += 1
                continue
            try:
                rgb, depth_m = decode_frame(pair.color, pair.depth, depth_scale_m)
            except BagError as exc:
                stats.skipped[f'bad image: {exc}'] += 1
                continue
            if rgb.shape[:2] != depth_m.shape:
                stats.skipped['depth size differs from color (not aligned)'] += 1
                continue
            intr = _camera_info_for(pair.stamp_ns, info_stamps, infos, tolerance_ns)
            stats.emitted += 1
            yield LabeledFrame(rgb=rgb, depth_m=depth_m, intrinsics=intr, stamp_ns=pair.stamp_ns,
                               label=labelled[0], weld_id=labelled[1], bag=str(bag), label_source=source)
        unpaired = n_color - n_paired
        if unpaired:
            stats.skipped['no depth partner'] += unpaired


def _camera_info_for(stamp_ns: int, stamps: list[int], infos: list, tolerance_ns: int) -> Optional[Intrinsics]:
    """The camera_info with the frame's stamp (within tolerance), else the latest before it."""
    if not infos:
        return None
    i = bisect.bisect_left(stamps, stamp_ns - tolerance_ns)
    if i < len(stamps) and abs(stamps[i] - stamp_ns) <= tolerance_ns:
        return infos[i][1]
    j = bisect.bisect_right(stamps, stamp_ns) - 1
    return infos[max(j, 0)][1]


# --- writing (tests, benchmarks) ----------------------------------------------------

def write_bag(path: str | Path, frames: Sequence[dict], *, storage: str = 'sqlite3',
              depth_encoding: str = '16UC1', color_encoding: str = 'rgb8',
              labels: Sequence[dict] = (), typestore=None) -> Path:
    """Record frames into a rosbag2 folder in the camera layout read above, with the one
    dataset writer (ros.dataset_bag.DatasetBagWriter).

    frames: dicts with 'stamp_ns', 'rgb' (uint8 H, W, 3 RGB), 'depth_m' (float32 [m]) and
    optional 'intrinsics' (Intrinsics). labels: dicts with 'stamp_ns', 'label', 'weld_id'
    and optional 'source', published on the label topic. Labels and frames are written in
    stamp order (a label before the frames of its stamp).
    """
    events: list[tuple[int, int, dict]] = [(int(lab['stamp_ns']), 0, lab) for lab in labels]
    events += [(int(f['stamp_ns']), 1, f) for f in frames]
    events.sort(key=lambda e: (e[0], e[1]))
    topics = (COLOR_TOPIC, DEPTH_TOPIC, CAMERA_INFO_TOPIC, LABEL_TOPIC)
    try:
        # Accepts any label name: a bag with a class outside the defaults is the reader's to refuse.
        with DatasetBagWriter(path, storage, typestore=typestore or make_typestore(), topics=topics,
                              class_names=()) as writer:
            for stamp, kind, item in events:
                if kind == 0:
                    writer.write_label(stamp, str(item['label']), str(item.get('weld_id', '')),
                                       str(item.get('source', 'sim')), frame_id='')
                    continue
                rgb = np.ascontiguousarray(item['rgb'], dtype=np.uint8)
                h, w = rgb.shape[:2]
                intr = item.get('intrinsics') or Intrinsics(fx=w, fy=w, cx=w / 2, cy=h / 2, width=w, height=h)
                writer.write_frame(stamp, rgb, item['depth_m'], intr, depth_encoding=depth_encoding,
                                   color_encoding=color_encoding, label=writer.current_label or '')
    except DatasetBagError as exc:
        raise BagError(str(exc)) from None
    return Path(path)
