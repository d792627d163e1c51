"""The executor probe: one node with three subscriptions in one mutually exclusive group (as
the ONNX node's camera inputs), spun by a given executor; what arrived, how often, at what CPU.
Used by benchmarks/bench_executor.py and by test/test_executor.py."""
from __future__ import annotations

import threading
import time


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
