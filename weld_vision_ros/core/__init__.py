"""ROS-free inspection core: camera model, depth, measurement, rules, weld spec, seam-strip
preprocessing, ONNX inference, the model contract and the rule/ML cascade.

Nothing under this package imports rclpy or message types; everything works on numpy
arrays and plain dataclasses so that it can be tested and benchmarked without ROS.
"""
