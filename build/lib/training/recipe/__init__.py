"""The recipe: data assembly and doses, augmentation, the training loop, resume state and model card, distributed
plumbing, streaming faces and the progress file. :mod:`training.train` puts them together; they import fer_core
and each other, never a command.
"""
