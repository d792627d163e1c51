"""Thin ROS 2 glue shared by the nodes: message <-> numpy, parameters, QoS, diagnostics.

Everything here imports rclpy or message types; the algorithms live in weld_vision_ros.core.
"""
