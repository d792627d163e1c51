"""Run one node until Ctrl-C or shutdown: the `main()` of every node executable."""
from __future__ import annotations

from typing import Callable, Optional

import rclpy
from rclpy.executors import Executor, ExternalShutdownException
from rclpy.node import Node


def run_node(make_node: Callable[[], Node], args: Optional[list[str]] = None,
             executor: Optional[Callable[[], Executor]] = None) -> None:
    """rclpy.init, build the node, spin it (on `executor()` if given), and always clean up:
    a Ctrl-C or an external shutdown ends it quietly."""
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
    finally:
        if ex is not None:
            ex.shutdown()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
