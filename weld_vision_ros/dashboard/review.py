"""The review screen: the flywheel's review bags (review_recorder_node) frame by frame, with
the product's verdicts and reasons, labelled into each bag's labels.yaml sidecar through
`weld_training.review.apply_labels` (what `weld-train review --labels` runs). A labelled
review bag is a dataset bag like any other: a training job on bags takes it.

Bags are named inside the configured review folder; only finished bags (metadata.yaml
written) are read. ROS-free: frames are read with rosbags and decoded by the frame codec.
"""
from __future__ import annotations

import csv
import tempfile
from pathlib import Path
from typing import Any, Optional

import cv2

from weld_training.review import REVIEW_NAME, ReviewError, apply_labels, read_review
from weld_vision_ros.core.classes import DEFAULT_CLASS_NAMES
from weld_vision_ros.ros import codec
from weld_vision_ros.ros.dataset_bag import COLOR_TOPIC, SIDECAR_NAME, make_typestore, read_sidecar

from .paths import inside

JPEG_QUALITY = 85


class ReviewScreenError(ValueError):
    """A review request that cannot be carried out; the message says why."""


class ReviewBags:
    """The review bags inside `folder` (None: no review folder configured)."""

    def __init__(self, folder: Optional[Path]) -> None:
        self.folder = Path(folder) if folder is not None else None
        self._store = None

    def _bag(self, name: str) -> Path:
        if self.folder is None:
            raise ReviewScreenError('this dashboard has no review folder (--review-dir)')
        bag = inside(self.folder, name, 'review bag')
        if not (bag / REVIEW_NAME).is_file():
            raise ReviewScreenError(f'no review bag {name!r} in {self.folder}')
        if not (bag / 'metadata.yaml').is_file():
            raise ReviewScreenError(f'review bag {name!r} is still being recorded (no metadata.yaml yet)')
        return bag

    def list_bags(self) -> list[dict[str, Any]]:
        if self.folder is None or not self.folder.is_dir():
            return []
        out = []
        for d in sorted(p for p in self.folder.iterdir() if (p / REVIEW_NAME).is_file()):
            try:
                entries = read_review(d)
            except ReviewError as exc:
                out.append({'name': d.name, 'problem': str(exc)})
                continue
            labelled = len(self._labels(d))
            out.append({'name': d.name, 'frames': len(entries), 'labelled': labelled,
                        'finished': (d / 'metadata.yaml').is_file()})
        return out

    @staticmethod
    def _labels(bag: Path) -> dict[int, str]:
        side = bag / SIDECAR_NAME
        return {s.start_ns: s.label for s in read_sidecar(side)} if side.is_file() else {}

    def entries(self, name: str) -> dict[str, Any]:
        bag = self._bag(name)
        labels = self._labels(bag)
        frames = [{'stamp_ns': int(e['stamp_ns']), 'reasons': list(e.get('reasons', [])),
                   'rule_class': e.get('rule_class', ''), 'ml_class': e.get('ml_class', ''),
                   'final_class': e.get('final_class', ''), 'confidence': e.get('confidence'),
                   'weld_id': e.get('weld_id', ''), 'label': labels.get(int(e['stamp_ns']), '')}
                  for e in read_review(bag)]
        return {'name': name, 'frames': frames, 'labels': list(DEFAULT_CLASS_NAMES)}

    def frame_jpeg(self, name: str, stamp_ns: int) -> bytes:
        """The colour image of the frame stamped `stamp_ns`, as JPEG."""
        from rosbags.rosbag2 import Reader
        bag = self._bag(name)
        if self._store is None:
            self._store = make_typestore()
        with Reader(bag) as reader:
            conns = [c for c in reader.connections if c.topic == COLOR_TOPIC]
            for conn, t, raw in reader.messages(connections=conns, start=int(stamp_ns), stop=int(stamp_ns) + 1):
                rgb = codec.decode_color(self._store.deserialize_cdr(raw, conn.msgtype))
                ok, buf = cv2.imencode('.jpg', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                                       [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
                return buf.tobytes()
        raise ReviewScreenError(f'no colour frame stamped {stamp_ns} in review bag {name!r}')

    def label(self, name: str, stamp_ns: int, label: str) -> dict[str, Any]:
        """Label one frame (written into the bag's labels.yaml, as weld-train review does)."""
        bag = self._bag(name)
        with tempfile.TemporaryDirectory() as tmp:
            csv_path = Path(tmp) / 'labels.csv'
            with open(csv_path, 'w', newline='') as f:
                csv.writer(f).writerow([int(stamp_ns), label])
            try:
                _, n = apply_labels(bag, csv_path)
            except ReviewError as exc:
                raise ReviewScreenError(str(exc).replace(str(csv_path) + ', line 1: ', '')) from None
        return {'name': name, 'stamp_ns': int(stamp_ns), 'label': label, 'labelled': len(self._labels(bag))}
