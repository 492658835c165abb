"""Benchmarks that print numbers: speed of every stage (``python -m training.benchmark``) and of video files
(``python -m training.video_benchmark``)."""
