"""The operator dashboard: a web page (and the JSON API under it) for the weld cell's live
results, dataset capture, training jobs and the model registry.

The app (`app.create_app`) is plain FastAPI over ROS-free parts (`live`, `training_jobs`,
`models`, `paths`); only `bridge` imports rclpy, so the HTTP side is tested without ROS.
`weld-vision dashboard` (`server.main`) serves it.
"""
