"""Review bags back into training: the frames the cell was least sure about, labelled.

`review_recorder_node` writes, beside the cell's nodes, a bag of the frames where the rules
and the model disagree, the confidence is low or the anomaly model flags an unknown
appearance, with `review.yaml` in the bag folder listing each frame's stamp and reasons.
Its frames are unlabelled. Labelling one (here from a CSV of stamp_ns,label; the dashboard
writes the same file) writes the bag's `labels.yaml` sidecar: one span per frame. The bag is
then a dataset bag like any other (`weld-train extract --bags` reads sidecar labels), which
closes the loop record -> review -> label -> train -> evaluate -> deploy.
"""
from __future__ import annotations

import csv
from pathlib import Path

import yaml

from weld_vision_ros.core.classes import DEFAULT_CLASS_NAMES, UnknownClassError, check_class_name
from weld_vision_ros.ros.dataset_bag import SIDECAR_NAME, LabelSpan, read_sidecar, write_sidecar

REVIEW_NAME = 'review.yaml'


class ReviewError(ValueError):
    """A review bag or a label file that cannot be used; the message names the file."""


def read_review(bag: str | Path) -> list[dict]:
    """The review entries of a bag (stamp_ns, reasons, rule/ml class, confidence, weld_id)."""
    path = Path(bag) / REVIEW_NAME
    try:
        data = yaml.safe_load(path.read_text(encoding='utf-8'))
    except OSError as exc:
        raise ReviewError(f'{path}: cannot read ({exc.strerror}); is {bag} a review bag?') from None
    except yaml.YAMLError as exc:
        raise ReviewError(f'{path}: not YAML ({str(exc).splitlines()[0]})') from None
    if not isinstance(data, list) or not all(isinstance(e, dict) and 'stamp_ns' in e for e in data):
        raise ReviewError(f'{path}: expected a list of entries with stamp_ns')
    return data


def apply_labels(bag: str | Path, labels_csv: str | Path) -> tuple[Path, int]:
    """Write the bag's labels.yaml from a CSV of stamp_ns,label; returns (path, frames labelled).
    Labels already in the sidecar are kept unless the CSV relabels the same frame."""
    bag = Path(bag)
    entries = {int(e['stamp_ns']): e for e in read_review(bag)}
    labels: dict[int, str] = {}
    try:
        with open(labels_csv, newline='', encoding='utf-8') as f:
            rows = list(csv.reader(f))
    except OSError as exc:
        raise ReviewError(f'{labels_csv}: cannot read ({exc.strerror})') from None
    for i, row in enumerate(rows, start=1):
        if not row or row[0].strip().startswith('#') or row[0].strip() == 'stamp_ns':
            continue
        if len(row) < 2:
            raise ReviewError(f'{labels_csv}, line {i}: expected stamp_ns,label; got {",".join(row)!r}')
        try:
            stamp = int(row[0])
        except ValueError:
            raise ReviewError(f'{labels_csv}, line {i}: {row[0]!r} is not a stamp in ns') from None
        if stamp not in entries:
            raise ReviewError(f'{labels_csv}, line {i}: no frame stamped {stamp} in {bag / REVIEW_NAME}')
        try:
            labels[stamp] = check_class_name(row[1].strip(), DEFAULT_CLASS_NAMES)
        except UnknownClassError as exc:
            raise ReviewError(f'{labels_csv}, line {i}: {exc}') from None
    side = bag / SIDECAR_NAME
    spans = {s.start_ns: s for s in (read_sidecar(side) if side.is_file() else [])}
    for stamp, label in labels.items():
        spans[stamp] = LabelSpan(stamp, stamp, label, str(entries[stamp].get('weld_id', '')))
    write_sidecar(side, sorted(spans.values(), key=lambda s: s.start_ns))
    return side, len(labels)
