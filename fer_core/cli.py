"""``fer``: one command for the recognizer's command lines (installed by ``pip install .``).

    fer predict photo.jpg --json      # = python -m fer_core.predict photo.jpg --json
    fer batch inputs/ --out results/  # = python -m fer_core.batch ...
    fer video clip.mp4 --csv c.csv    # = python -m fer_core.video ...
    fer evaluate my_faces/            # = python -m training.evaluate ...
    fer compare a.pt b.pt my_faces/   # = python -m training.compare ...
    fer serve                         # = python -m fer_core.serve (the HTTP API)
    fer app                           # the dashboard: streamlit run app.py

Each subcommand takes exactly the arguments of the module it names (``fer <command> --help``).
"""

from __future__ import annotations

import os
import runpy
import subprocess
import sys

COMMANDS = {
    "predict": ("fer_core.predict", "classify every face in images"),
    "batch": ("fer_core.batch", "analyse folders of photos and videos into tables, resumable"),
    "video": ("fer_core.video", "every face's expression over a video"),
    "evaluate": ("training.evaluate", "accuracy and calibration on a labelled folder"),
    "compare": ("training.compare", "two models on the same images: intervals and McNemar's test"),
    "serve": ("fer_core.serve", "the HTTP API (docs/api.md)"),
    "app": (None, "the dashboard (streamlit run app.py); arguments go to streamlit"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {what}" for name, (_, what) in COMMANDS.items()]
    return "usage: fer <command> [arguments]\n\ncommands:\n" + "\n".join(lines) + (
        "\n\n`fer <command> --help` gives each command's arguments.")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"fer: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = COMMANDS[name][0]
    if module is None:
        from .locations import PROJECT_ROOT

        # from the app's folder, so that its .streamlit/config.toml applies (offline settings, no Deploy button)
        return subprocess.call([sys.executable, "-m", "streamlit", "run", str(PROJECT_ROOT / "app.py"), *rest],
                               cwd=PROJECT_ROOT, env={**os.environ})
    sys.argv = [f"fer {name}", *rest]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as e:  # the module's own exit: its code, and its message when it exits with one
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
