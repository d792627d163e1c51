"""CPU cost of spinning a node: rclpy's MultiThreadedExecutor against SteadyExecutor.

A node with three subscriptions in one mutually exclusive callback group (as the ONNX
node's camera inputs), each callback 2 ms of work, messages at 30 Hz per topic, spun by a
2-thread executor for a few seconds; repeated, alternating the executors, in one run.
Reports process CPU (cores, median / p99 over the repeats), tasks submitted to the thread
pool per callback, and the ratio to rclpy's executor.

    scripts/with_env.sh python benchmarks/bench_executor.py [--repeats 5] [--seconds 3]
"""
from __future__ import annotations

import argparse
import os

import numpy as np

from weld_vision_ros.perf.executor_probe import run_once


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--repeats', type=int, default=5)
    p.add_argument('--seconds', type=float, default=3.0)
    a = p.parse_args()
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    from rclpy.executors import MultiThreadedExecutor

    from weld_vision_ros.ros.executor import SteadyExecutor
    kinds = {'rclpy MultiThreadedExecutor': MultiThreadedExecutor, 'SteadyExecutor': SteadyExecutor}
    rows = {k: [] for k in kinds}
    for r in range(a.repeats):
        for name, cls in kinds.items():
            sent, got, submissions, cpu = run_once(cls, seconds=a.seconds)
            rows[name].append((cpu, submissions / max(1, len(got)), len(sent) - len(got)))
            print(f'[{r + 1}/{a.repeats}] {name}: {cpu:.2f} cores, {submissions} submissions, '
                  f'{len(got)}/{len(sent)} callbacks', flush=True)
    base = np.median([c for c, _, _ in rows['rclpy MultiThreadedExecutor']])
    print(f'\nload average {os.getloadavg()[0]:.2f}; {a.repeats} repeats of {a.seconds:g} s; '
          f'callback work alone is {3 * 30 * 0.002:.2f} cores')
    print('| executor | CPU median [cores] | CPU p99 [cores] | submissions per callback | lost | CPU / rclpy |')
    print('|---|---|---|---|---|---|')
    for name, vals in rows.items():
        cpu = np.array([c for c, _, _ in vals])
        print(f'| {name} | {np.median(cpu):.2f} | {np.percentile(cpu, 99):.2f} | '
              f'{np.median([s for _, s, _ in vals]):.1f} | {sum(x for _, _, x in vals)} | '
              f'{np.median(cpu) / base:.2f}x |')


if __name__ == '__main__':
    main()
