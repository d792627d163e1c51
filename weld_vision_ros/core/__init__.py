"""ROS-free core: camera model, synthetic renderer, measurement, rules, inference.

Nothing under this package imports rclpy or message types; everything works on numpy
arrays and plain dataclasses so that it can be tested and benchmarked without ROS.
"""
