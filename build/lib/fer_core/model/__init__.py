"""From face crops to probabilities: the Xception network, its checkpoints and ONNX files, the backends that run it,
the Predictor, calibration and the "uncertain" policy, explanations, and the shipped artifacts.

Uses faces/ and the ground floor.
"""
