"""Run one node until Ctrl-C or shutdown: the `main()` of every node executable.

Ctrl-C (SIGINT, also what `ros2 launch` and the systemd unit send) makes rclpy's signal
handler shut the context down at once, from its own thread, while a callback may still be
running: a frame callback in a pool thread, or rclpy taking a message in the main thread.
That callback's `publish` then raises `RCLError: Failed to publish: publisher's context is
invalid`, and a KeyboardInterrupt landing inside rclpy's C++ code (a message being taken)
comes out as a RuntimeError, sometimes before the context is down. Both are the shutdown,
not faults: publishers made with `create_publisher` below drop a message published after
the context shut down (and say so by returning False, so the caller can skip its log line,
which would fail to reach /rosout too), and `run_node` ends quietly on an exception raised
after Ctrl-C was received (it notes SIGINT in a Python handler that rclpy's handler chains
to) or once the context is shut down.
"""
from __future__ import annotations

import signal
from typing import Any, Callable, Optional

import rclpy
from rclpy.executors import Executor, ExternalShutdownException
from rclpy.node import Node

from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy

RCLError = _rclpy.RCLError  # as rclpy.subscription names it (Humble too)


class ShutdownSafePublisher:
    """An rclpy publisher whose `publish` drops the message instead of raising once the
    node's context has shut down (module docstring); everything else is the publisher's."""

    def __init__(self, node: Node, publisher: Any) -> None:
        self._node = node
        self._publisher = publisher

    def publish(self, msg: Any) -> bool:
        """Publish `msg`; False (nothing sent) when the context has shut down."""
        if not self._node.context.ok():
            return False
        try:
            self._publisher.publish(msg)
        except RCLError:
            if self._node.context.ok():
                raise
            return False
        return True

    def __getattr__(self, name: str) -> Any:
        return getattr(self._publisher, name)


def create_publisher(node: Node, msg_type: Any, topic: str, qos: Any, **kwargs: Any) -> ShutdownSafePublisher:
    """`node.create_publisher(...)`, safe to publish from a callback while Ctrl-C shuts down."""
    return ShutdownSafePublisher(node, node.create_publisher(msg_type, topic, qos, **kwargs))


def shutting_down(node: Node) -> bool:
    """True once the node's context has shut down (Ctrl-C): callbacks then return at once."""
    return not node.context.ok()


class _SigintSeen:
    """A SIGINT handler that notes the signal, then raises KeyboardInterrupt as Python's does.
    Installed before rclpy.init: rclpy's own handler calls it after shutting the context down."""

    def __init__(self) -> None:
        self.seen = False

    def __call__(self, signum, frame) -> None:
        self.seen = True
        signal.default_int_handler(signum, frame)


def run_node(make_node: Callable[[], Node], args: Optional[list[str]] = None,
             executor: Optional[Callable[[], Executor]] = None) -> None:
    """rclpy.init, build the node, spin it (on `executor()` if given), and always clean up:
    a Ctrl-C or an external shutdown ends it quietly."""
    sigint = _SigintSeen()
    try:
        signal.signal(signal.SIGINT, sigint)
    except ValueError:
        pass  # not the main thread (a test running a node in a thread): rclpy's handling only
    rclpy.init(args=args)
    node = None
    ex = executor() if executor is not None else None
    try:
        node = make_node()
        if ex is None:
            rclpy.spin(node)
        else:
            ex.add_node(node)
            ex.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        if rclpy.ok() and not sigint.seen:
            raise
        # Raised by Ctrl-C inside rclpy, or once it had shut the context down (module docstring).
    finally:
        if ex is not None:
            ex.shutdown()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
