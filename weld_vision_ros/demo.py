"""The inspection pipeline on the synthetic camera, scored live against ground truth.

Starts the synthetic camera and the inspection node(s) as separate processes (as on the
cell), subscribes to their results from this process, and prints a per-class summary
every few seconds and at the end. `make run` runs it.
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

REPO = Path(__file__).resolve().parent.parent
MODES = ('rule', 'ml', 'hybrid')


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='weld-vision demo', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--duration', type=float, default=30.0, help='seconds to run (default 30)')
    p.add_argument('--forever', action='store_true', help='run until Ctrl-C')
    p.add_argument('--rate-hz', type=float, default=10.0, help='camera frame rate (default 10)')
    p.add_argument('--width', type=int, default=640)
    p.add_argument('--height', type=int, default=480)
    p.add_argument('--seed', type=int, default=7, help='synthetic camera seed')
    p.add_argument('--mode', choices=MODES, default='rule',
                   help='rule: rule node only; ml / hybrid: the ONNX node (needs --model)')
    p.add_argument('--model', type=Path, default=None, help='ONNX model for ml / hybrid mode')
    p.add_argument('--summary-period', type=float, default=5.0, help='seconds between summaries')
    return p


def _spawn(module: str, params: dict, log_dir: Path) -> subprocess.Popen:
    cmd = [sys.executable, '-m', module, '--ros-args']
    for k, v in params.items():
        v = ('true' if v else 'false') if isinstance(v, bool) else v
        cmd += ['-p', f'{k}:={v}']
    log = open(log_dir / f'{module.rsplit(".", 1)[-1]}.log', 'w')
    return subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                            env=dict(os.environ, PYTHONUNBUFFERED='1'), start_new_session=True)


def _stop(procs: Sequence[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.mode != 'rule' and args.model is None:
        build_parser().error(f'--mode {args.mode} needs --model PATH (an exported ONNX model)')
    # A domain of its own, so that other ROS 2 programs on this machine do not mix in.
    os.environ.setdefault('ROS_DOMAIN_ID', str(random.randint(1, 200)))
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    log_dir = REPO / 'log' / 'demo'
    log_dir.mkdir(parents=True, exist_ok=True)

    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from weld_vision_ros.defect_monitor_node import DefectMonitorNode

    camera = {'rate_hz': float(args.rate_hz), 'width': args.width, 'height': args.height,
              'seed': args.seed}
    procs = [_spawn('weld_vision_ros.synthetic_camera_node', camera, log_dir)]
    if args.mode == 'rule':
        procs.append(_spawn('weld_vision_ros.rule_defect_node', {}, log_dir))
        topic = 'weld/defect/rule'
    else:
        procs.append(_spawn('weld_vision_ros.onnx_defect_node',
                            {'mode': args.mode, 'model_path': str(args.model.resolve()),
                             'models_dir': str(args.model.resolve().parent)}, log_dir))
        topic = 'weld/defect'
    print(f'[demo] synthetic camera at {args.rate_hz:g} Hz, {args.width}x{args.height}, '
          f'mode {args.mode}; node logs in {log_dir}', flush=True)

    from rclpy.parameter import Parameter
    rclpy.init()
    monitor = DefectMonitorNode(parameter_overrides=[Parameter('defect_topic', value=topic),
                                                     Parameter('summary_period_s', value=0.0)])
    ex = SingleThreadedExecutor()
    ex.add_node(monitor)
    deadline = time.monotonic() + (float('inf') if args.forever else args.duration)
    next_summary = time.monotonic() + args.summary_period
    exit_code = 0
    try:
        while time.monotonic() < deadline:
            ex.spin_once(timeout_sec=0.1)
            dead = [p for p in procs if p.poll() is not None]
            if dead:
                print(f'[demo] a node exited early (code {dead[0].returncode}); see {log_dir}', flush=True)
                exit_code = 1
                break
            if time.monotonic() >= next_summary:
                next_summary += args.summary_period
                print(f'\n[demo] after {monitor.elapsed_s():.0f} s\n{monitor.summary()}', flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        _stop(procs)
        print(f'\n[demo] final, after {monitor.elapsed_s():.0f} s\n{monitor.summary()}', flush=True)
        ex.shutdown()
        monitor.destroy_node()
        rclpy.try_shutdown()
    if monitor.board.verdicts == 0:
        print('[demo] no verdict arrived: the pipeline is not working', flush=True)
        return 1
    return exit_code


if __name__ == '__main__':
    sys.exit(main())
