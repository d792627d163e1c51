"""Publishes a few pre-rendered synthetic RGB-D frames over and over, new stamps each time,
reliable and fast (a separate process, until interrupted): more frames than a node can
inspect, so that it is always inside a frame callback. argv: rate [Hz], width, height."""
import sys

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image

from weld_vision_ros.ros.conversions import array_to_image, intrinsics_to_camera_info
from weld_vision_ros.simulator.renderer import SyntheticWeldStream, default_intrinsics


def main() -> None:
    rate_hz, width, height = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    stream = SyntheticWeldStream(1, default_intrinsics(width, height), frames_per_weld=2)
    frames = [stream.next_frame()[0] for _ in range(4)]
    rclpy.init()
    node = rclpy.create_node('frame_flood')
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    pub_color = node.create_publisher(Image, 'camera/color/image_raw', qos)
    pub_depth = node.create_publisher(Image, 'camera/aligned_depth_to_color/image_raw', qos)
    pub_info = node.create_publisher(CameraInfo, 'camera/color/camera_info', qos)
    count = [0]

    def tick() -> None:
        from std_msgs.msg import Header
        frame = frames[count[0] % len(frames)]
        header = Header(stamp=node.get_clock().now().to_msg(), frame_id='camera_color_optical_frame')
        pub_info.publish(intrinsics_to_camera_info(frame.intrinsics, header))
        pub_color.publish(array_to_image(frame.rgb, 'rgb8', header))
        pub_depth.publish(array_to_image(frame.depth_m, '32FC1', header))
        count[0] += 1

    node.create_timer(1.0 / rate_hz, tick)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == '__main__':
    main()
