"""weld_training: rosbag2 recordings -> datasets -> PyTorch models -> ONNX for the cell.

Pure Python: never imports rclpy, so it runs on any desktop after `pip install`.
"""
__version__ = '0.1.0'
