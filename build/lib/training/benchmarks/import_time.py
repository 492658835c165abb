"""What each page pays for its imports: ``python -X importtime`` over the module-level imports of app.py and every
page, in a fresh interpreter each time (the best of --repeats). Prints numbers, asserts nothing.

    python -m training.benchmarks.import_time                  # this checkout
    python -m training.benchmarks.import_time --root ../other  # another checkout, to compare (e.g. before a move)

A page's own work (widgets, models) is not timed: only the imports it runs before its first line of code, which is
what the lazy public face of fer_core and the package layout can change.
"""

from __future__ import annotations

import argparse
import ast
import re
import subprocess
import sys
from pathlib import Path

from fer_core.locations import PROJECT_ROOT

LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=str(PROJECT_ROOT), help="the checkout whose pages are timed (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=5, help="fresh interpreters per page; the best counts (default: %(default)s)")
    return p


def module_imports(script: Path) -> str:
    """The module-level import statements of a script, as source."""
    source = script.read_text()
    return "\n".join(ast.get_source_segment(source, n) for n in ast.parse(source).body
                     if isinstance(n, ast.Import) or (isinstance(n, ast.ImportFrom) and n.module != "__future__"))


def import_ms(root: Path, code: str) -> tuple[float, int]:
    """Milliseconds of running ``code``'s imports in a fresh interpreter (the sum of the top-level imports' cumulative
    times), and how many modules they loaded (a count that does not depend on how busy the machine is)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code], cwd=root, capture_output=True, text=True,
                          check=True)
    total = modules = 0
    for line in proc.stderr.splitlines():
        m = LINE.match(line)
        if m:
            modules += 1
            if len(m.group(3)) == 1:  # a top-level import: its cumulative time holds everything it imported
                total += int(m.group(2))
    return total / 1000, modules


def main(args: argparse.Namespace) -> dict:
    root = Path(args.root).resolve()
    scripts = [root / "app.py", *sorted((root / "pages").glob("*.py"))]
    results = {}
    print(f"import time of each page's module-level imports, best of {args.repeats} fresh interpreters ({root})")
    for script in scripts:
        code = module_imports(script)
        runs = [import_ms(root, code) for _ in range(args.repeats)]
        results[script.name] = best = min(ms for ms, _ in runs)
        print(f"{script.name:28s} {best:8.0f} ms  {runs[0][1]:5d} modules")
    return results


if __name__ == "__main__":
    main(get_args_parser().parse_args())
