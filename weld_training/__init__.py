"""weld_training: rosbag2 recordings -> datasets -> PyTorch models -> ONNX for the cell.

Pure Python: never imports rclpy at import time (only `weld-train deploy` does, when it
runs), so it runs on any desktop after `pip install`. Bags are
read with `rosbags`, our message types registered from the package's msg/*.msg text.

Steps (each one its own module and `weld-train` subcommand):
  bags.py      read and pair RGB / depth / camera_info, attach labels
  dataset.py   write the dataset folder (images, depth, manifest.json); torch Dataset
  splits.py    stratified train/val/test splits grouped by weld
  train.py     the trainer (train_one_epoch, evaluate, main)
  distributed.py  data-parallel training under torchrun (samplers, global-batch BatchNorm)
  evaluate.py  metrics and the JSON / Markdown report
  export.py    ONNX export with the weld.* metadata contract, parity check, int8
  registry.py  runs and model versions (SQLite); `weld-train models/status/cancel`
  deploy.py    sends a model to a running ONNX node (`weld-train deploy`)
"""
__version__ = '0.1.0'
