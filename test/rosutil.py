"""Helpers for node tests: real rclpy in the test process, nodes in child processes."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional

REPO = Path(__file__).resolve().parent.parent


def _param_arg(name: str, value: Any) -> str:
    if isinstance(value, bool):
        text = 'true' if value else 'false'
    elif isinstance(value, (list, tuple)):
        text = '[' + ','.join(f"'{v}'" if isinstance(v, str) else repr(v) for v in value) + ']'
    else:
        text = str(value)
    return f'{name}:={text}'


def spawn_node(module: str, params: Optional[Mapping[str, Any]] = None, *, name: Optional[str] = None,
               args: tuple[str, ...] = (), log_path: Optional[Path] = None) -> subprocess.Popen:
    """Start `python -m module` as its own process with ROS parameters on the command line."""
    cmd = [sys.executable, '-m', module, *args, '--ros-args']
    if name:
        cmd += ['-r', f'__node:={name}']
    for k, v in (params or {}).items():
        cmd += ['-p', _param_arg(k, v)]
    out = open(log_path, 'w') if log_path else subprocess.DEVNULL
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop(proc: subprocess.Popen, timeout_s: float = 10.0) -> int:
    """Ctrl-C the process (as a user would), then kill it if it hangs; return its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


@contextlib.contextmanager
def ros_context(node_name: str = 'test_probe') -> Iterator[Any]:
    """An rclpy context, a node and an executor for the test process; yields (node, executor)."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node(node_name, context=ctx)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    try:
        yield node, ex
    finally:
        ex.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=ctx)


def spin_until(executor, predicate: Callable[[], bool], timeout_s: float) -> bool:
    """Spin until predicate() is true or the timeout passes; return predicate()."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        executor.spin_once(timeout_sec=0.05)
    return predicate()


def call_service(node, executor, srv_type, name: str, request, timeout_s: float = 15.0):
    """Call a service and wait for its answer (the service must come up within the timeout)."""
    client = node.create_client(srv_type, name)
    try:
        deadline = time.monotonic() + timeout_s
        while not client.wait_for_service(timeout_sec=0.2):
            executor.spin_once(timeout_sec=0.05)
            if time.monotonic() > deadline:
                raise TimeoutError(f'service {name} did not come up in {timeout_s} s')
        future = client.call_async(request)
        executor.spin_until_future_complete(future, timeout_sec=max(0.1, deadline - time.monotonic()))
        if not future.done():
            raise TimeoutError(f'service {name} did not answer in {timeout_s} s')
        return future.result()
    finally:
        node.destroy_client(client)


def set_parameters(node, executor, target_node: str, values: Mapping[str, Any], timeout_s: float = 15.0):
    """SetParameters on another process's node; returns the list of SetParametersResult."""
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter
    req = SetParameters.Request()
    req.parameters = [Parameter(k, value=v).to_parameter_msg() for k, v in values.items()]
    return call_service(node, executor, SetParameters, f'{target_node}/set_parameters', req,
                        timeout_s).results
