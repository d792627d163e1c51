"""The synthetic RGB-D weld camera: the renderer (plain numpy/OpenCV), its ROS 2 node and the
dataset recorder `weld-sim record`. For the demo, tests and training data; not on the cell."""
