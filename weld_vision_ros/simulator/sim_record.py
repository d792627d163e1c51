"""`weld-sim record`: labelled synthetic RGB-D recordings as rosbag2 (sqlite3 or mcap).

Writes what the synthetic camera publishes, without ROS: the camera topics, the label
topic (a WeldLabel at the start of every weld, i.e. whenever the label or weld changes)
and the ground truth, stamped as a camera running at --rate-hz would. Optionally also a
sidecar label file (labels.yaml in the bag folder) mapping stamp ranges to labels, the
other way labels arrive on the cell. Prints per-class counts at the end.

    weld-sim record --out datasets/sim_train --frames 2000 --storage mcap --seed 1
    weld-sim record --out datasets/sim_cracks --frames 200 --classes good crack:2 --sidecar
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

from weld_vision_ros.core.classes import DEFAULT_CLASS_NAMES, check_class_name
from weld_vision_ros.simulator.renderer import SyntheticWeldStream, default_intrinsics
from weld_vision_ros.ros.dataset_bag import (DEPTH_ENCODINGS, GROUND_TRUTH_TOPIC, LABEL_TOPIC,
                                             SIDECAR_NAME, STORAGES, TOPIC_TYPES, DatasetBagWriter,
                                             LabelSpan, class_counts_table, write_sidecar)

# 2026-01-01T00:00:00Z: a fixed start, so that a seed gives the same bag byte for byte.
DEFAULT_START_NS = 1_767_225_600_000_000_000
LABEL_SOURCE = 'sim'


@dataclass(frozen=True)
class RecordOptions:
    """What to record. class_weights: class -> relative weight (None: all classes equally)."""

    out: Path
    frames: int
    storage: str = 'mcap'
    seed: int = 0
    class_weights: Optional[Mapping[str, float]] = None
    frames_per_weld: int = 10
    width: int = 640
    height: int = 480
    rate_hz: float = 10.0
    noise_scale: float = 1.0
    depth_encoding: str = '32FC1'
    label_topic: bool = True
    sidecar: bool = False
    ground_truth: bool = True
    start_ns: int = DEFAULT_START_NS
    ranges: Optional[Mapping[str, tuple[float, float]]] = None  # scene ranges (renderer.SCENE_RANGES)

    def __post_init__(self) -> None:
        if self.frames < 1:
            raise ValueError(f'frames must be >= 1, got {self.frames}')
        if self.storage not in STORAGES:
            raise ValueError(f'storage must be one of {", ".join(STORAGES)}, got {self.storage!r}')
        if self.depth_encoding not in DEPTH_ENCODINGS:
            raise ValueError(f'depth encoding must be one of {", ".join(DEPTH_ENCODINGS)}, '
                             f'got {self.depth_encoding!r}')
        if not (self.rate_hz > 0):
            raise ValueError(f'rate_hz must be positive, got {self.rate_hz}')
        if self.frames_per_weld < 1:
            raise ValueError(f'frames_per_weld must be >= 1, got {self.frames_per_weld}')
        if self.width < 16 or self.height < 16:
            raise ValueError(f'image size must be at least 16x16, got {self.width}x{self.height}')
        if not (self.label_topic or self.sidecar):
            raise ValueError('no labels: keep the label topic or write a sidecar file (or both)')


@dataclass
class RecordSummary:
    bag: Path
    frames: int = 0
    counts: Counter = field(default_factory=Counter)        # frames per class
    welds: Counter = field(default_factory=Counter)         # welds per class
    sidecar: Optional[Path] = None
    seconds: float = 0.0


ProgressFn = Callable[[int, int, float], None]


def record(opts: RecordOptions, progress: Optional[ProgressFn] = None) -> RecordSummary:
    """Render and write the recording; progress(done, total, elapsed_s) after each frame."""
    intrinsics = default_intrinsics(opts.width, opts.height)
    stream = SyntheticWeldStream(opts.seed, intrinsics, class_weights=opts.class_weights,
                                 noise_scale=opts.noise_scale, frames_per_weld=opts.frames_per_weld,
                                 ranges=opts.ranges)
    topics = [t for t in TOPIC_TYPES
              if (t != LABEL_TOPIC or opts.label_topic)
              and (t != GROUND_TRUTH_TOPIC or opts.ground_truth)]
    summary = RecordSummary(bag=Path(opts.out))
    spans: list[LabelSpan] = []
    period_ns = 1e9 / opts.rate_hz
    t0 = time.monotonic()
    with DatasetBagWriter(opts.out, opts.storage, topics=topics) as bag:
        for i in range(opts.frames):
            stamp_ns = opts.start_ns + int(round(i * period_ns))
            frame, new_weld = stream.next_frame()
            truth = frame.truth
            if new_weld:
                if opts.label_topic:
                    bag.write_label(stamp_ns, truth.defect_class, truth.weld_id, LABEL_SOURCE)
                spans.append(LabelSpan(stamp_ns, stamp_ns, truth.defect_class, truth.weld_id))
                summary.welds[truth.defect_class] += 1
            else:
                last = spans[-1]
                spans[-1] = LabelSpan(last.start_ns, stamp_ns, last.label, last.weld_id)
            bag.write_frame(stamp_ns, frame.rgb, frame.depth_m, intrinsics, opts.depth_encoding,
                            label=truth.defect_class)
            if opts.ground_truth:
                bag.write_truth(stamp_ns, truth)
            if progress is not None:
                progress(i + 1, opts.frames, time.monotonic() - t0)
        summary.counts = Counter(bag.counts)
        summary.frames = bag.frames
    if opts.sidecar:
        summary.sidecar = write_sidecar(Path(opts.out) / SIDECAR_NAME, spans)
    summary.seconds = time.monotonic() - t0
    return summary


def parse_class_weights(items: Optional[Sequence[str]]) -> Optional[dict[str, float]]:
    """['good', 'crack:2'] -> {'good': 1.0, 'crack': 2.0}; None or [] -> None (all equal)."""
    if not items:
        return None
    weights: dict[str, float] = {}
    for item in items:
        name, _, weight = item.partition(':')
        check_class_name(name)
        try:
            value = float(weight) if weight else 1.0
        except ValueError:
            raise ValueError(f'class weight in {item!r} is not a number') from None
        if value < 0:
            raise ValueError(f'class weight in {item!r} must be >= 0')
        weights[name] = value
    if sum(weights.values()) <= 0:
        raise ValueError('at least one class needs a positive weight')
    return weights


class _Progress:
    """One status line on stderr, refreshed about once a second, for long recordings."""

    def __init__(self, stream=None, period_s: float = 1.0) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._period_s = period_s
        self._next = period_s
        self._tty = self._stream.isatty()

    def __call__(self, done: int, total: int, elapsed_s: float) -> None:
        if elapsed_s < self._next and done < total:
            return
        self._next = elapsed_s + self._period_s
        rate = done / elapsed_s if elapsed_s > 0 else 0.0
        eta = (total - done) / rate if rate > 0 else 0.0
        text = f'[weld-sim] {done}/{total} frames ({100 * done / total:.0f} %), {rate:.1f} frames/s, ETA {eta:.0f} s'
        end = '\r' if self._tty and done < total else '\n'
        print(text, end=end, file=self._stream, flush=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='weld-sim', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest='command', required=True)
    r = sub.add_parser('record', help='write a labelled synthetic recording (rosbag2)',
                       description='Write a labelled synthetic RGB-D recording as a rosbag2 folder.')
    r.add_argument('--out', type=Path, required=True, help='bag folder to create (must not exist)')
    r.add_argument('--frames', type=int, required=True, help='number of frames')
    r.add_argument('--storage', choices=STORAGES, default='mcap')
    r.add_argument('--seed', type=int, default=0, help='random seed (same seed, same bag)')
    r.add_argument('--classes', nargs='+', metavar='CLASS[:WEIGHT]',
                   help=f'classes to draw welds from, optionally weighted (default: all of '
                        f'{", ".join(DEFAULT_CLASS_NAMES)}, equally)')
    r.add_argument('--frames-per-weld', type=int, default=10,
                   help='frames of each weld (the label and weld_id change between welds)')
    r.add_argument('--width', type=int, default=640)
    r.add_argument('--height', type=int, default=480)
    r.add_argument('--rate-hz', type=float, default=10.0, help='camera rate the stamps follow')
    r.add_argument('--noise-scale', type=float, default=1.0,
                   help='scales depth noise, glare dropouts and colour noise (0: clean)')
    r.add_argument('--depth-encoding', choices=DEPTH_ENCODINGS, default='32FC1',
                   help='32FC1 metres (default) or 16UC1 millimetres, as a RealSense publishes')
    r.add_argument('--sidecar', action='store_true',
                   help=f'also write {SIDECAR_NAME} (stamp ranges -> labels) into the bag folder')
    r.add_argument('--no-label-topic', action='store_true',
                   help=f'leave out {LABEL_TOPIC} (labels only in the sidecar; implies --sidecar)')
    r.add_argument('--no-ground-truth', action='store_true', help='leave out /camera/ground_truth')
    r.add_argument('--start-ns', type=int, default=DEFAULT_START_NS, help='stamp of the first frame [ns]')
    r.add_argument('--quiet', action='store_true', help='no progress line')
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        opts = RecordOptions(
            out=args.out, frames=args.frames, storage=args.storage, seed=args.seed,
            class_weights=parse_class_weights(args.classes), frames_per_weld=args.frames_per_weld,
            width=args.width, height=args.height, rate_hz=args.rate_hz, noise_scale=args.noise_scale,
            depth_encoding=args.depth_encoding, label_topic=not args.no_label_topic,
            sidecar=args.sidecar or args.no_label_topic, ground_truth=not args.no_ground_truth,
            start_ns=args.start_ns)
    except ValueError as exc:
        parser.error(str(exc))
    if opts.out.exists():
        parser.error(f'{opts.out} exists already; rosbag2 recordings are never overwritten')
    summary = record(opts, progress=None if args.quiet else _Progress())
    print(f'wrote {summary.frames} frames of {sum(summary.welds.values())} welds to {summary.bag} '
          f'({opts.storage}, {summary.seconds:.1f} s)')
    if summary.sidecar:
        print(f'labels also in {summary.sidecar}')
    print(class_counts_table(summary.counts, summary.welds))
    return 0


if __name__ == '__main__':
    sys.exit(main())
