"""``python -m training.video_benchmark``: the video benchmark, :mod:`training.benchmarks.video` (kept where users
type it)."""

from training.benchmarks.video import get_args_parser, main

if __name__ == "__main__":
    main(get_args_parser().parse_args())
