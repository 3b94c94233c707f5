"""Deferred third-party imports that cost start-up time and are rarely used.

onnx_ir imports sympy (~200 ms, over half of a command's import time) for symbolic shape
arithmetic, which graphfix seldom does. `defer_sympy()`, called by `graphfix/__init__.py` (so
before any graphfix module imports onnx_ir), puts stand-ins for sympy and for onnx_ir's
`_symbolic_shapes` (the one module that touches sympy at import) in `sys.modules`: `import sympy` then binds the stand-in, and its first attribute
access imports the real module and takes over its namespace, so everything behaves as before,
only later. (`importlib.util.LazyLoader` cannot be used: on Python 3.11 the `import` statement
itself reads `__spec__` and so loads the module at once.) Nothing is done when either module is
already imported or cannot be found, or when GRAPHFIX_EAGER_IMPORTS is set.
"""

from __future__ import annotations

__all__ = ["defer_sympy"]

import importlib
import importlib.util
import os
import sys
import types


class _Deferred(types.ModuleType):
    """A module stand-in: the real module is imported on the first missing attribute."""

    def __getattr__(self, attr: str):
        name = self.__name__
        if sys.modules.get(name) is self:
            del sys.modules[name]
        real = importlib.import_module(name)
        self.__dict__.update(real.__dict__)
        return getattr(real, attr)


def _defer(name: str, spec) -> None:
    module = _Deferred(name)
    module.__spec__ = spec
    module.__file__ = spec.origin
    if spec.submodule_search_locations is not None:
        module.__path__ = list(spec.submodule_search_locations)
    sys.modules[name] = module


def defer_sympy() -> None:
    """Defer `import sympy` (and onnx_ir's `_symbolic_shapes`) to first use, if neither is imported."""
    shapes = "onnx_ir._symbolic_shapes"
    if "sympy" in sys.modules or "onnx_ir" in sys.modules or os.environ.get("GRAPHFIX_EAGER_IMPORTS"):
        return
    try:
        sympy = importlib.util.find_spec("sympy")
        package = importlib.util.find_spec("onnx_ir")  # a top-level spec: onnx_ir is not run
    except (ImportError, ValueError):
        return
    if sympy is None or package is None or not package.submodule_search_locations:
        return
    path = os.path.join(list(package.submodule_search_locations)[0], "_symbolic_shapes.py")
    if not os.path.isfile(path):
        return
    _defer("sympy", sympy)
    _defer(shapes, importlib.util.spec_from_file_location(shapes, path))
