#!/usr/bin/env python3
"""CPU per frame of the cell's nodes: rule node alone against rule node + ONNX node (hybrid),
for this tree and an older commit, in one run.

    scripts/with_env.sh python benchmarks/bench_cell_cpu.py                 # 5 Hz, 25 s each
    scripts/with_env.sh python benchmarks/bench_cell_cpu.py --old 7b1d71b --rate-hz 5 --duration 25

Four configurations, one after the other, each as separate processes (as on the cell): the
synthetic camera (this tree's, same seed every time) and then
  new: rule node | new: rule node + ONNX node | old: rule node | old: rule node + ONNX node
with config/weld_cell.yaml of that tree and the bundled demo model in hybrid mode. The old
commit is unpacked with `git archive` and run from there. This process subscribes to the
camera's ground truth (which frames were sent), weld/bead (the rule node answers every frame)
and weld/defect (the ONNX node's final verdicts) and reads each node's CPU time from /proc.

Reported per configuration, over the window after a warm-up: frames sent, frames answered on
weld/bead (lost: sent - answered), CPU [ms per sent frame] of each node and of the nodes
together, their ratio to the rule node alone of the same tree, and camera -> verdict latency
(receive time here minus the frame's stamp, one clock) p50 / p99 on weld/defect (hybrid) or
weld/bead (rule alone). Results go to stdout and, with --out-md, into that file's section.
"""
from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from weld_vision_ros.perf.e2e_metrics import read_cpu_s  # noqa: E402
from weld_vision_ros.perf.trees import export_commit  # noqa: E402
from weld_vision_ros.ros import codec  # noqa: E402

SECTION = '## Cell CPU per frame: rule node + ONNX node (hybrid) against the rule node alone'
# Node modules of each layout (the old commit kept the nodes at the package's top level).
LAYOUTS = {
    'new': {'rule': 'weld_vision_ros.nodes.rule_defect_node', 'onnx': 'weld_vision_ros.nodes.onnx_defect_node'},
    'old': {'rule': 'weld_vision_ros.rule_defect_node', 'onnx': 'weld_vision_ros.onnx_defect_node'},
}
CAMERA_MODULE = 'weld_vision_ros.simulator.synthetic_camera_node'


@dataclass
class Result:
    name: str
    sent: int = 0
    answered: int = 0
    cpu_ms: dict = field(default_factory=dict)        # node -> CPU ms per sent frame
    latency_ms: list = field(default_factory=list)    # camera -> verdict


def spawn(module: str, tree: Path, params: dict, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, '-m', module, '--ros-args', '--params-file', str(tree / 'config' / 'weld_cell.yaml')]
    for key, value in params.items():
        cmd += ['-p', f'{key}:={value}']
    env = dict(os.environ, PYTHONUNBUFFERED='1', PYTHONPATH=f'{tree}{os.pathsep}{os.environ.get("PYTHONPATH", "")}')
    with open(log, 'w') as fh:
        return subprocess.Popen(cmd, cwd=tree, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(2)
    deadline = time.monotonic() + 10.0
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def run_config(name: str, tree: Path, layout: str, with_onnx: bool, args, node, executor, log_dir: Path) -> Result:
    from rclpy.qos import qos_profile_sensor_data  # noqa: F401 - rclpy is initialised by main

    sent: dict[int, int] = {}
    beads: dict[int, int] = {}
    finals: dict[int, int] = {}
    window = {'open': False}

    def stamp_of(msg) -> int:
        return codec.header_stamp_ns(msg)

    def on_truth(msg):
        if window['open']:
            sent[stamp_of(msg)] = time.time_ns()

    # Answers are kept whenever they come (the window is on the frames sent), so the last
    # frames of the window still count when their answer arrives after it.
    def on_bead(msg):
        beads[stamp_of(msg)] = time.time_ns()

    def on_final(msg):
        finals[stamp_of(msg)] = time.time_ns()

    from weld_vision_ros.msg import BeadMeasurement, WeldDefect, WeldGroundTruth
    from weld_vision_ros.ros.qos import results_qos
    subs = [node.create_subscription(WeldGroundTruth, codec.GROUND_TRUTH_TOPIC, on_truth, results_qos(depth=50)),
            node.create_subscription(BeadMeasurement, 'weld/bead', on_bead, results_qos(depth=50)),
            node.create_subscription(WeldDefect, 'weld/defect', on_final, results_qos(depth=50))]
    modules = LAYOUTS[layout]
    nodes = {'rule': spawn(modules['rule'], tree, {}, log_dir / f'{name}_rule.log')}
    if with_onnx:
        model = tree / 'config' / 'models' / 'weld_demo.onnx'
        nodes['onnx'] = spawn(modules['onnx'], tree, {'mode': 'hybrid', 'model_path': str(model),
                                                      'models_dir': str(model.parent)},
                              log_dir / f'{name}_onnx.log')
    camera = spawn(CAMERA_MODULE, REPO, {'rate_hz': float(args.rate_hz), 'seed': args.seed, 'width': 640,
                                         'height': 480}, log_dir / f'{name}_camera.log')
    procs = list(nodes.values()) + [camera]
    result = Result(name)
    try:
        t_end = time.monotonic() + args.warmup
        while time.monotonic() < t_end:
            executor.spin_once(timeout_sec=0.05)
        cpu0 = {k: read_cpu_s(p.pid) for k, p in nodes.items()}
        window['open'] = True
        t_end = time.monotonic() + args.duration
        while time.monotonic() < t_end:
            executor.spin_once(timeout_sec=0.05)
        window['open'] = False
        cpu1 = {k: read_cpu_s(p.pid) for k, p in nodes.items()}
        # Answers to the frames sent inside the window may still be on their way.
        t_end = time.monotonic() + 2.0
        while time.monotonic() < t_end:
            executor.spin_once(timeout_sec=0.05)
        dead = [k for k, p in nodes.items() if p.poll() is not None]
        if dead:
            raise RuntimeError(f'{name}: {dead} exited early (logs in {log_dir})')
    finally:
        stop(procs)
        for s in subs:
            node.destroy_subscription(s)
    result.sent = len(sent)
    result.answered = len(set(sent) & set(beads))
    n = max(1, result.sent)
    result.cpu_ms = {k: 1000.0 * (cpu1[k] - cpu0[k]) / n for k in nodes}
    answers = finals if with_onnx else beads
    result.latency_ms = [(answers[s] - s) / 1e6 for s in sent if s in answers]
    return result


def merge_rounds(name: str, runs: list[Result]) -> Result:
    """Frames and latencies of all rounds together; CPU per frame: the median of the rounds."""
    merged = Result(name, sent=sum(r.sent for r in runs), answered=sum(r.answered for r in runs))
    merged.cpu_ms = {k: float(np.median([r.cpu_ms[k] for r in runs])) for k in runs[0].cpu_ms}
    merged.latency_ms = [x for r in runs for x in r.latency_ms]
    return merged


def markdown(results: list[Result], args, old: str, load: tuple[float, float]) -> str:
    by = {r.name: r for r in results}
    lines = [SECTION, '',
             f'`python benchmarks/bench_cell_cpu.py --rate-hz {args.rate_hz:g} --duration {args.duration:g} '
             f'--warmup {args.warmup:g} --rounds {args.rounds} --old {old}`: synthetic camera 640x480 at {args.rate_hz:g} Hz (seed {args.seed}), bundled demo '
             f'model, {args.duration:g} s measured per configuration after {args.warmup:g} s warm-up, {args.rounds} '
             'interleaved rounds in one run (CPU: median of the rounds; frames and latency: all rounds). '
             f'Load average {load[0]:.2f} at the start and {load[1]:.2f} at the end on a 2-core machine shared '
             'with other work: absolute numbers are noisy, compare within the table.', '',
             '| configuration | frames sent | answered (lost) | rule node [ms/frame] | ONNX node [ms/frame] '
             '| together [ms/frame] | / rule alone (same tree) | camera -> verdict p50 / p99 [ms] |',
             '|---|---|---|---|---|---|---|---|']
    for r in results:
        tree = r.name.split(':')[0]
        alone = by.get(f'{tree}: rule node')
        total = sum(r.cpu_ms.values())
        ratio = total / sum(alone.cpu_ms.values()) if alone and sum(alone.cpu_ms.values()) else float('nan')
        lat = np.asarray(r.latency_ms) if r.latency_ms else np.asarray([np.nan])
        lines.append(f'| {r.name} | {r.sent} | {r.answered} ({r.sent - r.answered}) | {r.cpu_ms.get("rule", 0):.1f} | '
                     f'{r.cpu_ms.get("onnx", float("nan")):.1f} | {total:.1f} | {ratio:.2f}x | '
                     f'{np.percentile(lat, 50):.1f} / {np.percentile(lat, 99):.1f} |')
    return '\n'.join(lines) + '\n'


def write_section(path: Path, text: str) -> None:
    old = path.read_text() if path.exists() else ''
    if SECTION in old:
        head, _, rest = old.partition(SECTION)
        nxt = rest.find('\n## ')
        old = head + (rest[nxt + 1:] if nxt >= 0 else '')
    path.write_text(old.rstrip() + '\n\n' + text)


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--old', default='7b1d71b', help='older commit to compare with (default 7b1d71b)')
    p.add_argument('--rate-hz', type=float, default=5.0, help='camera rate; low enough that no frame is lost')
    p.add_argument('--duration', type=float, default=25.0, help='seconds measured per configuration')
    p.add_argument('--warmup', type=float, default=6.0, help='seconds before measuring (start-up, model load)')
    p.add_argument('--seed', type=int, default=7)
    p.add_argument('--rounds', type=int, default=2,
                   help='rounds of the four configurations, interleaved (CPU: median of the rounds)')
    p.add_argument('--out-md', type=Path, default=None, help='write the table into this file\'s section')
    args = p.parse_args(argv)
    if not (args.rate_hz > 0 and args.duration > 0 and args.warmup >= 0 and args.rounds >= 1):
        p.error('--rate-hz, --duration and --rounds must be positive, --warmup not negative')
    os.environ['ROS_DOMAIN_ID'] = str(random.SystemRandom().randint(120, 200))
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    load0 = os.getloadavg()[0]
    rclpy.init()
    node = rclpy.create_node('bench_cell_cpu_probe')
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    results: list[Result] = []
    try:
        with tempfile.TemporaryDirectory(prefix='weld-bench-cell-') as tmp:
            old_tree = export_commit(REPO, args.old, Path(tmp))
            log_dir = REPO / 'log' / 'bench_cell_cpu'
            log_dir.mkdir(parents=True, exist_ok=True)
            rounds: dict[str, list[Result]] = {}
            for round_no in range(args.rounds):
                for tree_name, tree, layout in (('new', REPO, 'new'), (f'old {args.old}', old_tree, 'old')):
                    for with_onnx in (False, True):
                        name = f'{tree_name}: rule node' + (' + ONNX node (hybrid)' if with_onnx else '')
                        print(f'[bench] round {round_no + 1}: {name} ...', flush=True)
                        r = run_config(name, tree, layout, with_onnx, args, node, executor, log_dir)
                        print(f'[bench]   sent {r.sent}, answered {r.answered}, CPU ms/frame '
                              f'{ {k: round(v, 1) for k, v in r.cpu_ms.items()} }', flush=True)
                        rounds.setdefault(name, []).append(r)
            results = [merge_rounds(name, runs) for name, runs in rounds.items()]
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    text = markdown(results, args, args.old, (load0, os.getloadavg()[0]))
    print('\n' + text)
    if args.out_md:
        write_section(args.out_md, text)
    return 0


if __name__ == '__main__':
    sys.exit(main())
