"""From pixels to face crops: reading images, finding faces and their landmarks, aligning them, and the one
preprocessing that turns a crop into the model's input; drawing boxes and labels back onto an image.

Uses only the ground floor of fer_core (labels, files, locations, onnx_runtime).
"""
