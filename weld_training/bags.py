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
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Sequence

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

    def merge(self, other: 'ReadStats') -> None:
        self.color_messages += other.color_messages
        self.depth_messages += other.depth_messages
        self.paired += other.paired
        self.emitted += other.emitted
        self.skipped.update(other.skipped)


# --- message types ---------------------------------------------------------------------

def make_typestore(msg_dir: Optional[Path] = None):
    """A rosbags typestore with the ROS 2 standard types and ours from msg/*.msg (the one
    `weld-sim record` writes with); a missing msg folder is a BagError."""
    try:
        return dataset_bag.make_typestore(msg_dir)
    except DatasetBagError as exc:
        raise BagError(f'{exc}; install the package or pass the msg folder') from None


# --- finding bags and label files ------------------------------------------------------

def find_bags(paths: Sequence[str | Path]) -> list[Path]:
    """Bag folders (with metadata.yaml) named by `paths`: bags, their files, or folders of bags."""
    bags: list[Path] = []
    for p in (Path(p) for p in paths):
        if not p.exists():
            raise BagError(f'no such bag or folder: {p}')
        if p.is_file():
            p = p.parent
        if (p / 'metadata.yaml').is_file():
            bags.append(p)
            continue
        inner = sorted(m.parent for m in p.rglob('metadata.yaml'))
        if not inner:
            raise BagError(f'{p} holds no rosbag2 recording (no metadata.yaml below it)')
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

def count_color_frames(bag: Path, topics: Topics = Topics()) -> int:
    """Number of color messages in a bag (from its index; no message is read)."""
    from rosbags.rosbag2 import Reader
    with Reader(bag) as reader:
        return sum(c.msgcount for c in reader.connections if c.topic == topics.color)


def read_label_timeline(bag: Path, reader, typestore, topics: Topics, label_source: str,
                        sidecar: Optional[Path], class_names: Sequence[str]) -> tuple[LabelTimeline, str]:
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
    stamps, labels = [], []
    for conn, _t, raw in reader.messages(connections=conns):
        msg = typestore.deserialize_cdr(raw, conn.msgtype)
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
                    typestore=None, stats: Optional[ReadStats] = None) -> Iterator[LabeledFrame]:
    """Yield the labelled, paired frames of one bag in stamp order.

    tolerance_ns: 0 pairs color and depth with identical stamps only; more pairs the
    nearest ones at most that far apart. depth_scale_m: metres per unit of 16UC1 depth.
    Frames without a label, a depth partner or a decodable image are counted in
    `stats.skipped` and left out.
    """
    from rosbags.rosbag2 import Reader

    bag = Path(bag)
    store = typestore or make_typestore()
    stats = stats if stats is not None else ReadStats()
    with Reader(bag) as reader:
        timeline, source = read_label_timeline(bag, reader, store, topics, label_source,
                                               Path(sidecar) if sidecar else None, class_names)
        info_conns = [c for c in reader.connections if c.topic == topics.camera_info]
        infos: list[tuple[int, Intrinsics]] = []
        for conn, _t, raw in reader.messages(connections=info_conns):
            msg = store.deserialize_cdr(raw, conn.msgtype)
            infos.append((codec.header_stamp_ns(msg), codec.intrinsics_from_camera_info(msg)))
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
        for conn, _t, raw in reader.messages(connections=image_conns):
            msg = store.deserialize_cdr(raw, conn.msgtype)
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
