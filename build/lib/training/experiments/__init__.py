"""Studies behind the documented choices (docs/): face framing, label-noise checks, explanation faithfulness and
examples, Grad-CAM, fixed neutral offsets. Each is a command, ``python -m training.experiments.<name>``."""
