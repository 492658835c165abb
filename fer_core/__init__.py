"""fer_core: the shared facial-expression-recognition library.

Importing this package has no side effects: no model is built, no weights are read,
no camera is opened. Import the submodules you need.
"""

__version__ = "1.0.0"
