"""Bare image relay: the transport baseline of the end-to-end benchmark.

Republishes every color and aligned-depth image as soon as it arrives, as the serialized
bytes it came in (no deserialization, no copy into numpy), on

    relay/color/image_raw                    (from camera/color/image_raw)
    relay/aligned_depth_to_color/image_raw   (from camera/aligned_depth_to_color/image_raw)

So camera -> relay -> subscriber costs what one more hop of the same images costs between
Python processes, and nothing else: the floor an inference node's latency is compared with.
A benchmark tool, not a node of the product.

    python -m benchmarks.image_relay --ros-args -p image_reliability:=best_effort
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from sensor_msgs.msg import Image

from weld_vision_ros.ros.params import LiveParameters, ParamSpec
from weld_vision_ros.ros.qos import RELIABILITY_CHOICES, camera_qos

NODE_NAME = 'image_relay'
ROUTES = (('camera/color/image_raw', 'relay/color/image_raw'),
          ('camera/aligned_depth_to_color/image_raw', 'relay/aligned_depth_to_color/image_raw'))

PARAMS = (
    ParamSpec('image_reliability', 'best_effort', 'QoS reliability of the subscriptions and of '
              'the republished images, fixed at start (match the camera)',
              choices=RELIABILITY_CHOICES, read_only=True),
)


@dataclass(frozen=True)
class RelayConfig:
    image_reliability: str

    @classmethod
    def from_values(cls, v: Mapping[str, Any]) -> 'RelayConfig':
        return cls(str(v['image_reliability']))


class ImageRelayNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.params = LiveParameters(self, PARAMS, RelayConfig.from_values)
        # The camera's own QoS on both sides: the relay must not add queueing the camera
        # path does not have.
        qos = camera_qos(self.params.config.image_reliability)
        self.relayed = 0
        for source, target in ROUTES:
            publisher = self.create_publisher(Image, target, qos)
            self.create_subscription(Image, source, self._forward_to(publisher), qos, raw=True)
        self.get_logger().info('relaying ' + ', '.join(f'{s} -> {t}' for s, t in ROUTES))

    def _forward_to(self, publisher):
        def forward(serialized: bytes) -> None:
            publisher.publish(serialized)
            self.relayed += 1
        return forward


def main(args: Optional[list[str]] = None) -> None:
    rclpy.init(args=args)
    node = None
    try:
        node = ImageRelayNode()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()


if __name__ == '__main__':
    main()
