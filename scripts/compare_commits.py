#!/usr/bin/env python3
"""Behaviour equivalence of two versions of the inspection pipeline, frame by frame.

    scripts/with_env.sh python scripts/compare_commits.py            # base commit vs working tree
    scripts/with_env.sh python scripts/compare_commits.py --old 7b1d71b --bench-frames 240

Each version runs in a subprocess of its own, with its own tree first on sys.path (the old
commit is unpacked with `git archive` into a temporary folder), on the same fixed frames:

- the accuracy frames of benchmarks/bench_rules.py (seeds from 7_000_000, classes in turn);
- the demo camera's stream (seed 7, 640x480, 10 frames per weld, the camera's defaults).

On every frame each version runs what the nodes run: the rule core with default parameters
(rule node: measurement and verdict) and the hybrid cascade with the bundled demo model
(ONNX node: final and ml verdicts), the model alone on every frame (mode ml) and the hybrid
cascade with threshold 1 (the model behind the rules on every frame), so that every frame's
seam strip, located alone or taken over from the rule stage, reaches the comparison. Every verdict's class, confidence, probabilities,
status and regions, and every measurement field, must be equal (exactly: both versions run
the same arithmetic on the same machine). Latencies are left out; they are timings.
No ROS is needed.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from weld_vision_ros.perf.trees import export_commit  # noqa: E402

BASE_COMMIT = '7b1d71b'

# Run inside each tree. It finds the pipeline where that version keeps it: the new layout
# first, the old one as the fallback, so the same program drives both versions.
CHILD = r'''
import json, sys
from dataclasses import asdict, fields, is_dataclass
import numpy as np
sys.path.insert(0, TREE)

def _first(*candidates):
    # The first candidate this very tree has (the package's extend_path could offer modules
    # of another checkout on the path: they do not count).
    import importlib
    for module, name in candidates:
        try:
            found = importlib.import_module(module)
        except ImportError:
            continue
        if found.__file__.startswith(TREE) and hasattr(found, name):
            return getattr(found, name)
    raise ImportError(f'none of {candidates} in {TREE}')

render_random = _first(('weld_vision_ros.simulator.renderer', 'render_random'),
                       ('weld_vision_ros.core.synthetic', 'render_random'))
default_intrinsics = _first(('weld_vision_ros.simulator.renderer', 'default_intrinsics'),
                            ('weld_vision_ros.core.synthetic', 'default_intrinsics'))
Stream = _first(('weld_vision_ros.simulator.renderer', 'SyntheticWeldStream'),
                ('weld_vision_ros.core.synthetic', 'SyntheticWeldStream'))
from weld_vision_ros.core.frames import RGBDFrame
from weld_vision_ros.core.classes import DEFAULT_CLASS_NAMES
from weld_vision_ros.core.rules import RuleConfig, inspect_frame
from weld_vision_ros.core.cascade import CascadeConfig, HybridCascade
from weld_vision_ros.core.onnx_classifier import RuntimeOptions, load_classifier

def plain(x):
    if is_dataclass(x):
        return {f.name: plain(getattr(x, f.name)) for f in fields(x)
                if f.name not in ('latency_ms',)}
    if isinstance(x, np.ndarray):
        return plain(x.tolist())
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    if isinstance(x, dict):
        return {str(k): plain(v) for k, v in x.items()}
    if isinstance(x, (np.floating, float)):
        return repr(float(x))      # exact, NaN-safe
    if isinstance(x, np.integer):
        return int(x)
    return x

model = TREE + '/config/models/weld_demo.onnx'
classifier = load_classifier(model, models_dir=TREE + '/config/models', options=RuntimeOptions(('cpu',), 1))
rule_config = RuleConfig()
def rule_fn(frame):
    r = inspect_frame(frame, rule_config)
    return r.measurement, r.verdict
import weld_vision_ros.core.cascade as cascade_module
if 'Inspection' in repr(cascade_module.RuleFn):     # the rule stage hands over its whole Inspection
    stage = lambda frame: inspect_frame(frame, rule_config)
else:                                               # (measurement, verdict), as before
    stage = rule_fn
cascade = HybridCascade(stage, CascadeConfig('hybrid'), classifier)
# Threshold 1: the model behind the rules on every frame (its strip cut from the rules' seam
# where the version shares it), so every frame's hybrid path reaches the comparison.
unsure = HybridCascade(stage, CascadeConfig('hybrid', 1.0), classifier)

def frames():
    for i in range(BENCH_FRAMES):
        seed = 7_000_000 + i
        cls = DEFAULT_CLASS_NAMES[seed % len(DEFAULT_CLASS_NAMES)]
        f = render_random(np.random.default_rng(seed), default_intrinsics(640, 480), defect_class=cls)
        yield f'bench:{seed}', RGBDFrame(f.rgb, f.depth_m, f.intrinsics, stamp_ns=seed)
    stream = Stream(7, default_intrinsics(640, 480), frames_per_weld=10)
    for i in range(DEMO_FRAMES):
        f, _ = stream.next_frame()
        yield f'demo:{i}', RGBDFrame(f.rgb, f.depth_m, f.intrinsics, stamp_ns=i)

import weld_vision_ros.core.rules as _rules
print('rules from', _rules.__file__, 'renderer from', sys.modules[render_random.__module__].__file__, file=sys.stderr)
for key, frame in frames():
    r = inspect_frame(frame, rule_config)
    c = cascade.run(frame)
    every = classifier.classify(frame)     # the model on every frame (mode ml): its input strip
    u = unsure.run(frame)
    print(json.dumps({'frame': key, 'measurement': plain(r.measurement), 'rule': plain(r.verdict),
                      'final': plain(c.final), 'ml': plain(c.ml), 'ml_invoked': c.ml_invoked,
                      'ml_every_frame': plain(every), 'hybrid_threshold_1': plain(u.final)}), flush=True)
'''


def run_tree(tree: Path, bench_frames: int, demo_frames: int) -> list[dict]:
    code = f'TREE = {str(tree)!r}\nBENCH_FRAMES = {bench_frames}\nDEMO_FRAMES = {demo_frames}\n' + CHILD
    out = subprocess.run([sys.executable, '-c', code], cwd=tree, capture_output=True, text=True,
                         # Only this tree on the path: the package's extend_path must not
                         # pull in modules of another checkout (or of install/).
                         env={**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONPATH': str(tree),
                              'PYTHONDONTWRITEBYTECODE': '1'})
    if out.returncode != 0:
        raise SystemExit(f'the pipeline failed in {tree}:\n{out.stderr[-4000:]}')
    print(out.stderr.strip().splitlines()[-1] if out.stderr.strip() else '', file=sys.stderr)
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith('{')]


def first_difference(a: Any, b: Any, path: str = '') -> Optional[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                return f'{path}.{k}: only in {"new" if k in b else "old"}'
            d = first_difference(a[k], b[k], f'{path}.{k}')
            if d:
                return d
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f'{path}: {len(a)} items vs {len(b)}'
        for i, (x, y) in enumerate(zip(a, b)):
            d = first_difference(x, y, f'{path}[{i}]')
            if d:
                return d
        return None
    return None if a == b else f'{path}: old {a!r} new {b!r}'


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--old', default=BASE_COMMIT, help=f'old commit (default {BASE_COMMIT})')
    p.add_argument('--new', default='', help='new commit (default: the working tree)')
    p.add_argument('--bench-frames', type=int, default=120, help='bench_rules accuracy frames (default 120)')
    p.add_argument('--demo-frames', type=int, default=60, help='demo camera frames (default 60)')
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix='weld-compare-') as tmp:
        old_dir, new_dir = Path(tmp) / 'old', Path(tmp) / 'new'
        old_dir.mkdir()
        old = run_tree(export_commit(REPO, args.old, old_dir), args.bench_frames, args.demo_frames)
        if args.new:
            new_dir.mkdir()
            new = run_tree(export_commit(REPO, args.new, new_dir), args.bench_frames, args.demo_frames)
        else:
            new = run_tree(REPO, args.bench_frames, args.demo_frames)
    expected = args.bench_frames + args.demo_frames
    if len(old) != expected or len(new) != expected:
        print(f'frame counts differ: old {len(old)}, new {len(new)}, expected {expected}')
        return 1
    differing = 0
    for a, b in zip(old, new):
        d = first_difference(a, b)
        if d:
            differing += 1
            if differing <= 10:
                print(f'{a["frame"]}: {d}')
    invoked = sum(1 for r in new if r['ml_invoked'])
    print(f'{expected} frames ({args.bench_frames} bench_rules, {args.demo_frames} demo camera seed 7), '
          f'model invoked on {invoked}: {expected - differing} equal, {differing} differ '
          f'(old {args.old}, new {args.new or "working tree"})')
    return 1 if differing else 0


if __name__ == '__main__':
    sys.exit(main())
