"""Publishes every custom message sample at 10 Hz until interrupted (a separate process)."""
import rclpy
from rclpy.executors import ExternalShutdownException

from test.helpers.message_samples import TOPICS, samples


def main() -> None:
    rclpy.init()
    node = rclpy.create_node('sample_publisher')
    msgs = samples()
    pubs = {k: node.create_publisher(type(m), TOPICS[k], 10) for k, m in msgs.items()}
    node.create_timer(0.1, lambda: [pubs[k].publish(m) for k, m in msgs.items()])
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == '__main__':
    main()
