"""A multi-threaded executor that waits instead of spinning while work is queued.

rclpy's `MultiThreadedExecutor` (before rclpy 10.0.4, so in Humble, Jazzy and the Kilted
wheels) hands a ready callback to its thread pool and, until a pool thread has started
it, gets the same task back from `wait_for_ready_callbacks` at once and submits it again
(ros2/rclpy#1452). The spinning thread then holds the GIL in a tight loop, the pool
threads barely run, and a node that should use a few percent of a core uses all of it:
frames queue up, and with bounded DDS queues they are lost.

`SteadyExecutor` submits each task once. When the wait hands back a task that is already
queued in the pool, it sleeps until a pool thread makes progress (or a few milliseconds
pass) instead of looping. Everything else is rclpy's executor: callback groups, guard
conditions, shutdown.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Optional

from rclpy.executors import (ConditionReachedException, ExternalShutdownException,
                             MultiThreadedExecutor, ShutdownException, TimeoutException)

# How long the spinning thread waits for a queued task to start before it looks again [s].
_REQUEUE_WAIT_S = 0.005


class SteadyExecutor(MultiThreadedExecutor):
    """`MultiThreadedExecutor` without the busy loop of ros2/rclpy#1452."""

    def __init__(self, num_threads: Optional[int] = None, **kwargs: Any) -> None:
        super().__init__(num_threads=num_threads, **kwargs)
        self._queued: set = set()  # tasks submitted to the pool that no thread has started yet
        self._progress = threading.Condition()
        self.requeue_waits = 0  # how often the wait handed back a task already queued

    def _run(self, handler: Callable[[], Any]) -> None:
        with self._progress:
            self._queued.discard(handler)
            self._progress.notify_all()
        handler()

    def _spin_once_impl(self, timeout_sec=None, wait_condition: Callable[[], bool] = lambda: False) -> None:
        try:
            handler, _, _ = self.wait_for_ready_callbacks(timeout_sec, None, wait_condition)
        except (ExternalShutdownException, ShutdownException, TimeoutException, ConditionReachedException):
            return
        with self._progress:
            if handler in self._queued:
                self.requeue_waits += 1
                self._progress.wait(_REQUEUE_WAIT_S)
                return
            self._queued.add(handler)
        future = self._executor.submit(self._run, handler)
        self._futures.append(future)
        for f in self._futures[:]:
            if f.done():
                self._futures.remove(f)
                f.result()  # raise any exception of a callback, as rclpy does
