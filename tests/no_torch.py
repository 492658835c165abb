"""Run a command as in the light install, where PyTorch is not there: ``python tests/no_torch.py MODULE ARGS...``.

Importing torch or torchvision fails here as it does when they are not installed (ModuleNotFoundError), whatever this
environment has; then MODULE runs as ``python -m MODULE ARGS...`` would."""

import importlib.abc
import runpy
import sys


class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("torch", "torchvision"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


if __name__ == "__main__":
    sys.meta_path.insert(0, NoTorch())
    module = sys.argv[1]
    sys.argv = [module, *sys.argv[2:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
