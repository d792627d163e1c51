"""The product's ROS 2 nodes, one per file: rule inspection, ONNX classification (alone or
behind the rules), dataset capture. Each is a thin shell around weld_vision_ros.core."""
