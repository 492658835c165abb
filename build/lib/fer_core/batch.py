"""``python -m fer_core.batch``: the batch command, :mod:`fer_core.jobs.batch` (kept where users type it)."""

import sys

from fer_core.jobs.batch import get_args_parser, main

if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
