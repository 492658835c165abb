"""``python -m fer_core.video``: the video-file command, :mod:`fer_core.video.analyse`."""

import sys

from fer_core.video.analyse import get_args_parser, main

sys.exit(main(get_args_parser().parse_args()))
