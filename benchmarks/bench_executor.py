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
import threading
import time

import numpy as np


def run_once(executor_cls, seconds=3.0, rate_hz=30.0, topics=3, work_s=0.002):
    """Publish on `topics` topics at `rate_hz` to one node whose callbacks share a mutually
    exclusive group and each take `work_s`; spin it with `executor_cls` (2 threads)."""
    import rclpy
    from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from std_msgs.msg import String

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    qos = QoSProfile(depth=500, reliability=ReliabilityPolicy.RELIABLE)
    pub_node = rclpy.create_node('steady_pub', context=ctx)
    sub_node = rclpy.create_node('steady_sub', context=ctx)
    pubs = [pub_node.create_publisher(String, f'steady_{i}', qos) for i in range(topics)]
    got: dict[str, int] = {}
    group = MutuallyExclusiveCallbackGroup()

    def callback(msg):
        t = time.perf_counter()
        while time.perf_counter() - t < work_s:
            pass
        got[msg.data] = got.get(msg.data, 0) + 1

    for i in range(topics):
        sub_node.create_subscription(String, f'steady_{i}', callback, qos, callback_group=group)
    sent = []

    def tick():
        for i, p in enumerate(pubs):
            sent.append(f'{i}:{len(sent)}')
            p.publish(String(data=sent[-1]))

    pub_ex = SingleThreadedExecutor(context=ctx)
    pub_ex.add_node(pub_node)
    ex = executor_cls(num_threads=2, context=ctx)
    ex.add_node(sub_node)
    submissions = [0]
    submit = ex._executor.submit

    def counting_submit(*a, **kw):
        submissions[0] += 1
        return submit(*a, **kw)
    ex._executor.submit = counting_submit
    # Let discovery finish before publishing, so every message has a reader.
    while pubs[0].get_subscription_count() < 1:
        pub_ex.spin_once(timeout_sec=0.05)
    timer = pub_node.create_timer(1.0 / rate_hz, tick)
    spinner = threading.Thread(target=pub_ex.spin, daemon=True)
    spinner.start()
    cpu0, t0 = time.process_time(), time.monotonic()
    while time.monotonic() - t0 < seconds:
        ex.spin_once(timeout_sec=0.1)
    pub_node.destroy_timer(timer)
    deadline = time.monotonic() + 10.0
    while len(got) < len(sent) and time.monotonic() < deadline:
        ex.spin_once(timeout_sec=0.1)
    cpu = (time.process_time() - cpu0) / (time.monotonic() - t0)
    pub_ex.shutdown()
    ex.shutdown()
    rclpy.try_shutdown(context=ctx)
    return sent, got, submissions[0], cpu



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
