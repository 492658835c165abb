"""``python -m training.benchmark``: the speed benchmark, :mod:`training.benchmarks.speed` (kept where users type it)."""

from training.benchmarks.speed import get_args_parser, main

if __name__ == "__main__":
    main(get_args_parser().parse_args())
