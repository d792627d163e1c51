#!/usr/bin/env python3
"""CPU cost of the operator dashboard on the cell, with one browser connected, against the
same pipeline without it, in one run.

    scripts/with_env.sh python benchmarks/bench_dashboard_cpu.py                  # 5 Hz, 20 s x 2 rounds
    scripts/with_env.sh python benchmarks/bench_dashboard_cpu.py --out-md BENCHMARKS.md

Two configurations, interleaved over --rounds, each as separate processes (as on the cell):
the synthetic camera, the rule node and the ONNX node (hybrid, bundled demo model), and
  without: nothing else (the rule node publishes no debug image);
  with:    the rule node publishes weld/debug_image, the dashboard runs (its own process) and
           one headless chromium shows its live screen (1 s polling + the MJPEG debug image).
This process subscribes to the camera's ground truth (frames sent), weld/bead (the rule node
answers every frame) and weld/defect, and reads CPU time from /proc. Added CPU = (rule +
ONNX + dashboard with) - (rule + ONNX without), as % of one core over the measured window;
chromium is not counted. Lost: frames sent without a weld/bead answer; the dashboard's own
verdict count (its /api/live) is compared with the weld/defect messages seen here.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.bench_cell_cpu import CAMERA_MODULE, spawn, stop, write_section  # noqa: E402
from weld_vision_ros.perf.e2e_metrics import read_cpu_s  # noqa: E402
from weld_vision_ros.ros import codec  # noqa: E402

SECTION = '## Operator dashboard: CPU with one browser connected against the same pipeline without it'
CHROMIUM = os.environ.get('WELD_CHROMIUM', '/usr/bin/chromium')
TOKEN = 'bench-token'


@dataclass
class Result:
    name: str
    window_s: float = 0.0
    sent: int = 0
    answered: int = 0
    verdicts_here: int = 0
    verdicts_dashboard: Optional[int] = None
    cpu_s: dict = field(default_factory=dict)      # process -> CPU seconds over the window
    jpeg_frames: Optional[int] = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5.0) as r:
        return json.loads(r.read())


def run_config(with_dashboard: bool, args, node, executor, log_dir: Path, browser) -> Result:
    name = 'with dashboard + browser' if with_dashboard else 'without dashboard'
    sent: dict[int, int] = {}
    beads: set[int] = set()
    verdicts: set[int] = set()
    window = {'open': False}

    def on_truth(msg):
        if window['open']:
            sent[codec.header_stamp_ns(msg)] = 1

    from weld_vision_ros.msg import BeadMeasurement, WeldDefect, WeldGroundTruth
    from weld_vision_ros.ros.qos import results_qos
    subs = [node.create_subscription(WeldGroundTruth, codec.GROUND_TRUTH_TOPIC, on_truth, results_qos(depth=50)),
            node.create_subscription(BeadMeasurement, 'weld/bead', lambda m: beads.add(codec.header_stamp_ns(m)),
                                     results_qos(depth=50)),
            node.create_subscription(WeldDefect, 'weld/defect', lambda m: verdicts.add(codec.header_stamp_ns(m)),
                                     results_qos(depth=50))]
    model = REPO / 'config' / 'models' / 'weld_demo.onnx'
    tag = 'with' if with_dashboard else 'without'
    procs = {'rule': spawn('weld_vision_ros.nodes.rule_defect_node', REPO,
                           {'publish_debug_image': 'true' if with_dashboard else 'false'}, log_dir / f'{tag}_rule.log'),
             'onnx': spawn('weld_vision_ros.nodes.onnx_defect_node', REPO,
                           {'mode': 'hybrid', 'model_path': str(model), 'models_dir': str(model.parent)},
                           log_dir / f'{tag}_onnx.log')}
    page = None
    port = _free_port()
    if with_dashboard:
        with open(log_dir / 'dashboard.log', 'w') as fh:
            procs['dashboard'] = subprocess.Popen(
                [sys.executable, '-m', 'weld_vision_ros.dashboard', '--port', str(port), '--token', TOKEN,
                 '--datasets-dir', str(log_dir / 'datasets'), '--runs-dir', str(log_dir / 'runs'),
                 '--models-dir', str(log_dir / 'models')],
                cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
                env=dict(os.environ, PYTHONUNBUFFERED='1'))
    camera = spawn(CAMERA_MODULE, REPO, {'rate_hz': float(args.rate_hz), 'seed': args.seed, 'width': 640,
                                         'height': 480}, log_dir / f'{tag}_camera.log')
    result = Result(name)
    try:
        t_end = time.monotonic() + args.warmup
        while time.monotonic() < t_end:
            executor.spin_once(timeout_sec=0.05)
        if with_dashboard:
            page = browser.new_page(viewport={'width': 1400, 'height': 900})
            page.goto(f'http://127.0.0.1:{port}/')
            page.wait_for_function("document.querySelector('#debug-image').naturalWidth > 0", timeout=30_000)
            t_end = time.monotonic() + 2.0       # the stream settles
            while time.monotonic() < t_end:
                executor.spin_once(timeout_sec=0.05)
            dash0 = _get_json(f'http://127.0.0.1:{port}/api/live')['verdicts_total']
        cpu0 = {k: read_cpu_s(p.pid) for k, p in procs.items()}
        verdicts.clear()
        t0 = time.monotonic()
        window['open'] = True
        t_end = t0 + args.duration
        while time.monotonic() < t_end:
            executor.spin_once(timeout_sec=0.05)
        window['open'] = False
        cpu1 = {k: read_cpu_s(p.pid) for k, p in procs.items()}
        result.window_s = time.monotonic() - t0
        # Answers to the last frames of the window may still be on their way.
        t_end = time.monotonic() + 2.0
        while time.monotonic() < t_end:
            executor.spin_once(timeout_sec=0.05)
        if with_dashboard:
            result.verdicts_dashboard = _get_json(f'http://127.0.0.1:{port}/api/live')['verdicts_total'] - dash0
        dead = [k for k, p in procs.items() if p.poll() is not None]
        if dead:
            raise RuntimeError(f'{name}: {dead} exited early (logs in {log_dir})')
    finally:
        if page is not None:
            page.close()
        stop(list(procs.values()) + [camera])
        for s in subs:
            node.destroy_subscription(s)
    result.sent = len(sent)
    result.answered = len(set(sent) & beads)
    result.verdicts_here = len(verdicts)
    result.cpu_s = {k: cpu1[k] - cpu0[k] for k in procs}
    return result


def pct(cpu_s: float, window_s: float) -> float:
    return 100.0 * cpu_s / window_s if window_s > 0 else float('nan')


def markdown(rounds: list[tuple[Result, Result]], args, load: tuple[float, float]) -> str:
    lines = [SECTION, '',
             f'`python benchmarks/bench_dashboard_cpu.py --rate-hz {args.rate_hz:g} --duration {args.duration:g} '
             f'--warmup {args.warmup:g} --rounds {args.rounds}`: synthetic camera 640x480 at {args.rate_hz:g} Hz '
             f'(seed {args.seed}), rule node + ONNX node (hybrid, bundled demo model) as separate processes, '
             f'{args.duration:g} s measured per configuration after {args.warmup:g} s warm-up, the two '
             f'configurations interleaved over {args.rounds} rounds in one run. CPU in % of one core over the '
             'window (chromium not counted). The last column counts weld/defect over the window and the 2 s '
             'after it, here and in the dashboard\'s /api/live (both from the window\'s start). '
             f'Load average {load[0]:.2f} at the start and {load[1]:.2f} at the end on a 2-core machine shared '
             'with other work.', '',
             '| round | configuration | frames sent | answered (lost) | rule node [%] | ONNX node [%] '
             '| dashboard [%] | total [%] | added by the dashboard [% of one core] | weld/defect here / counted by the dashboard |',
             '|---|---|---|---|---|---|---|---|---|---|']
    added = []
    for i, (without, with_) in enumerate(rounds, 1):
        base = sum(pct(v, without.window_s) for v in without.cpu_s.values())
        total = sum(pct(v, with_.window_s) for v in with_.cpu_s.values())
        added.append(total - base)
        for r, extra in ((without, '–'), (with_, f'{total - base:+.1f}')):
            c = {k: pct(v, r.window_s) for k, v in r.cpu_s.items()}
            dash = f'{c["dashboard"]:.1f}' if 'dashboard' in c else '–'
            page = r.verdicts_dashboard if r.verdicts_dashboard is not None else '–'
            lines.append(f'| {i} | {r.name} | {r.sent} | {r.answered} ({r.sent - r.answered}) | {c["rule"]:.1f} | '
                         f'{c["onnx"]:.1f} | {dash} | {sum(c.values()):.1f} | {extra} | {r.verdicts_here} / {page} |')
    lines += ['', f'Added CPU by the dashboard (debug-image publishing in the rule node included): median '
              f'{np.median(added):.1f} % of one core over {len(added)} rounds (each: {", ".join(f"{a:.1f}" for a in added)}); '
              f'frames lost: {sum(w.sent - w.answered for pair in rounds for w in pair)}.']
    return '\n'.join(lines) + '\n'


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--rate-hz', type=float, default=5.0, help='camera rate; low enough that no frame is lost')
    p.add_argument('--duration', type=float, default=20.0, help='seconds measured per configuration')
    p.add_argument('--warmup', type=float, default=10.0, help='seconds before measuring (start-up, model load)')
    p.add_argument('--seed', type=int, default=7)
    p.add_argument('--rounds', type=int, default=2, help='rounds of the two configurations, interleaved')
    p.add_argument('--out-md', type=Path, default=None, help="write the table into this file's section")
    args = p.parse_args(argv)
    if not (args.rate_hz > 0 and args.duration > 0 and args.warmup >= 0 and args.rounds >= 1):
        p.error('--rate-hz, --duration and --rounds must be positive, --warmup not negative')
    if not os.access(CHROMIUM, os.X_OK):
        p.error(f'{CHROMIUM} not found (scripts/setup.sh installs chromium)')
    os.environ['ROS_DOMAIN_ID'] = str(random.SystemRandom().randint(120, 200))
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    from weld_vision_ros.bringup import use_default_dds_profile
    use_default_dds_profile()
    import rclpy
    from playwright.sync_api import sync_playwright
    from rclpy.executors import SingleThreadedExecutor
    load0 = os.getloadavg()[0]
    log_dir = REPO / 'log' / 'bench_dashboard_cpu'
    log_dir.mkdir(parents=True, exist_ok=True)
    rclpy.init()
    node = rclpy.create_node('bench_dashboard_probe')
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    rounds: list[tuple[Result, Result]] = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=['--no-sandbox'])
            try:
                for i in range(args.rounds):
                    pair = []
                    for with_dashboard in ((False, True) if i % 2 == 0 else (True, False)):
                        print(f'[bench] round {i + 1}: {"with" if with_dashboard else "without"} dashboard ...',
                              flush=True)
                        r = run_config(with_dashboard, args, node, executor, log_dir, browser)
                        print(f'[bench]   sent {r.sent}, answered {r.answered}, CPU % '
                              f'{ {k: round(pct(v, r.window_s), 1) for k, v in r.cpu_s.items()} }', flush=True)
                        pair.append(r)
                    pair.sort(key=lambda r: r.verdicts_dashboard is not None)   # (without, with)
                    rounds.append((pair[0], pair[1]))
            finally:
                browser.close()
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    text = markdown(rounds, args, (load0, os.getloadavg()[0]))
    print('\n' + text)
    if args.out_md:
        write_section(args.out_md, text)
    return 0


if __name__ == '__main__':
    sys.exit(main())
