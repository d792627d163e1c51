"""Training for weld_vision_ros: rosbag recordings -> dataset -> model -> evaluated ONNX.

Pure Python: nothing here imports rclpy or generated message classes. Bags are read
with `rosbags`, our message types registered from the package's msg/*.msg text, so this
runs on a desktop after `pip install .[train]`.

Steps (each one its own module and `weld-train` subcommand):
  bags.py      read and pair RGB / depth / camera_info, attach labels
  dataset.py   write the dataset folder (images, depth, manifest.json); torch Dataset
  splits.py    stratified train/val/test splits grouped by weld
  train.py     the trainer (train_one_epoch, evaluate, main)
  evaluate.py  metrics and the JSON / Markdown report
  export.py    ONNX export with the weld.* metadata contract, parity check, int8
"""
