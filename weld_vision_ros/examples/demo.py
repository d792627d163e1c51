"""The inspection pipeline on the synthetic camera, scored live against ground truth.

Starts the weld-cell nodes with config/weld_cell.yaml: the synthetic camera, the rule node
and the ONNX node in hybrid mode with the bundled model (config/models/weld_demo.onnx),
by default in one child process through the in-process runner (`weld-vision run`), or each
node in a process of its own (--separate-processes, as the launch file does). This process
subscribes to their results across DDS like a robot controller would, runs the controller
example (stop / continue / rework per frame) and prints a per-class summary every few
seconds and at the end: verdicts against ground truth, bead measurement errors, rates,
latency and how often the model was asked. `make run` runs it.
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

from weld_vision_ros import resources
from weld_vision_ros.bringup import NODE_CLASSES
from weld_vision_ros.core.cascade import MODES


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='weld-vision demo', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--duration', type=float, default=30.0, help='seconds to run (default 30)')
    p.add_argument('--forever', action='store_true', help='run until Ctrl-C')
    p.add_argument('--rate-hz', type=float, default=10.0, help='camera frame rate (default 10)')
    p.add_argument('--width', type=int, default=640)
    p.add_argument('--height', type=int, default=480)
    p.add_argument('--seed', type=int, default=7, help='synthetic camera seed')
    p.add_argument('--mode', choices=MODES, default='hybrid',
                   help='the ONNX node\'s mode (default hybrid: the model only where the rules are unsure)')
    p.add_argument('--model', type=Path, default=None,
                   help='ONNX model (default: the bundled config/models/weld_demo.onnx)')
    p.add_argument('--separate-processes', action='store_true',
                   help='each node in a process of its own (as the launch file) instead of the runner')
    p.add_argument('--summary-period', type=float, default=5.0, help='seconds between summaries')
    p.add_argument('--dashboard', action='store_true',
                   help='also serve the operator dashboard (http://127.0.0.1:8090/ by default)')
    p.add_argument('--dashboard-args', default='', metavar='ARGS',
                   help="the dashboard's arguments as one string, e.g. '--port 8091 --token secret'")
    return p


def _start(cmd: list[str], log_path: Path) -> subprocess.Popen:
    log = open(log_path, 'w')
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                            env=dict(os.environ, PYTHONUNBUFFERED='1'), start_new_session=True)


def _pipeline(args, model: Optional[Path], log_dir: Path) -> list[subprocess.Popen]:
    """The camera, the rule node and the ONNX node, with the YAML and the demo's overrides."""
    camera = {'rate_hz': float(args.rate_hz), 'width': args.width, 'height': args.height,
              'seed': args.seed}
    onnx = {'mode': args.mode}
    if model is not None:
        onnx.update(model_path=str(model), models_dir=str(model.parent))
    params_file = resources.params_file()
    if not args.separate_processes:
        cmd = [sys.executable, '-m', 'weld_vision_ros.bringup', '--params-file', str(params_file),
               '--sim-camera', '--nodes', 'rule_defect_node', 'onnx_defect_node']
        for node, values in (('synthetic_camera_node', camera), ('onnx_defect_node', onnx)):
            cmd += [a for k, v in values.items() for a in ('--set', f'{node}.{k}={v}')]
        if args.dashboard:
            cmd += ['--dashboard', '--dashboard-args', args.dashboard_args]
        return [_start(cmd, log_dir / 'pipeline.log')]
    procs = []
    if args.dashboard:
        from weld_vision_ros.ros.launch_args import dashboard_command
        procs.append(_start(dashboard_command(args.dashboard_args), log_dir / 'dashboard.log'))
    rule = {'publish_debug_image': 'true'} if args.dashboard else {}
    for node, values in (('synthetic_camera_node', camera), ('rule_defect_node', rule),
                         ('onnx_defect_node', onnx)):
        cmd = [sys.executable, '-m', NODE_CLASSES[node][0], '--ros-args',
               '--params-file', str(params_file)]
        for k, v in values.items():
            cmd += ['-p', f'{k}:={v}']
        procs.append(_start(cmd, log_dir / f'{node}.log'))
    return procs


def _stop(procs: Sequence[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()


def _report(monitor, controller) -> str:
    decisions = ', '.join(f'{k} {v}' for k, v in sorted(controller.decisions.items())) or 'none yet'
    return f'{monitor.summary()}\ncontroller decisions: {decisions}'


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    model = args.model
    if model is None and args.mode != 'rule':
        try:
            model = resources.demo_model()
        except resources.ResourceNotFoundError as exc:
            print(f'[demo] {exc} (scripts/make_demo_model.sh makes it): the ONNX node publishes '
                  'the rule verdicts', flush=True)
    if model is not None:
        model = model.resolve()
        if not model.is_file():
            parser.error(f'--model {model}: no such file')
    # A domain of its own, so that other ROS 2 programs on this machine do not mix in.
    os.environ.setdefault('ROS_DOMAIN_ID', str(random.randint(1, 200)))
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    from weld_vision_ros.bringup import use_default_dds_profile
    use_default_dds_profile()
    log_dir = Path('log') / 'demo'
    log_dir.mkdir(parents=True, exist_ok=True)

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter

    from weld_vision_ros.examples.controller_example_node import ControllerExampleNode
    from weld_vision_ros.examples.defect_monitor_node import DefectMonitorNode

    procs = _pipeline(args, model, log_dir)
    how = 'each node in its own process' if args.separate_processes else 'one runner process'
    print(f'[demo] synthetic camera at {args.rate_hz:g} Hz, {args.width}x{args.height}; rule node '
          f'+ ONNX node in {args.mode} mode, model {model.name if model else "none"} ({how}); '
          f'logs in {log_dir}', flush=True)
    if args.dashboard:
        print(f'[demo] dashboard: its address (and its token, when generated) are the first '
              f'[dashboard] lines of {log_dir / ("dashboard.log" if args.separate_processes else "pipeline.log")}',
              flush=True)
    rclpy.init()
    monitor = DefectMonitorNode(parameter_overrides=[Parameter('defect_topic', value='weld/defect'),
                                                     Parameter('summary_period_s', value=0.0)])
    controller = ControllerExampleNode()
    # Its decisions are counted in the summary; its per-change log lines would bury the table.
    controller.get_logger().set_level(rclpy.logging.LoggingSeverity.WARN)
    ex = SingleThreadedExecutor()
    ex.add_node(monitor)
    ex.add_node(controller)
    deadline = time.monotonic() + (float('inf') if args.forever else args.duration)
    next_summary = time.monotonic() + args.summary_period
    exit_code = 0
    try:
        while time.monotonic() < deadline:
            ex.spin_once(timeout_sec=0.1)
            dead = [p for p in procs if p.poll() is not None]
            if dead:
                print(f'[demo] a node process exited early (code {dead[0].returncode}); see {log_dir}',
                      flush=True)
                exit_code = 1
                break
            if time.monotonic() >= next_summary and deadline - time.monotonic() > 1.0:
                next_summary += args.summary_period
                print(f'\n[demo] after {monitor.elapsed_s():.0f} s\n{_report(monitor, controller)}', flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        _stop(procs)
        print(f'\n[demo] final, after {monitor.elapsed_s():.0f} s\n{_report(monitor, controller)}', flush=True)
        ex.shutdown()
        monitor.destroy_node()
        controller.destroy_node()
        rclpy.try_shutdown()
    if monitor.board.verdicts == 0:
        print('[demo] no verdict arrived: the pipeline is not working', flush=True)
        return 1
    return exit_code


if __name__ == '__main__':
    sys.exit(main())
