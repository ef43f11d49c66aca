"""fashionlab: train, evaluate and compare CNN classifiers on Fashion-MNIST.

The Python API (docs/api.md) is loaded on first use, so `import fashionlab` and `fashionlab --help` do not import
torch: `fashionlab.train(...)`, `fashionlab.load_run(path)`, `fashionlab.compare([...])`,
`fashionlab.predict(run, images)`, `fashionlab.audit_labels(...)` and `fashionlab.Run`.
"""

import sys
import types

from fashionlab.about import CLASSES, __version__  # noqa: F401 - re-exported: fashionlab.CLASSES, __version__

# API names that are plain attributes of fashionlab.api, loaded lazily (PEP 562).
_API = ("Run", "load_run", "compare", "audit_labels")
# API functions named like a submodule (fashionlab/train.py, fashionlab/predict.py): `fashionlab.train` stays that
# module (code and tests import it and patch it), and the module is made callable as the API function.
_CALLABLE_SUBMODULES = ("train", "predict")


class _CallableModule(types.ModuleType):
    """A submodule that can also be called: fashionlab.train(...) is fashionlab.api.train(...)."""

    def __call__(self, *args, **kwargs):
        from fashionlab import api

        return getattr(api, self.__name__.rpartition(".")[2])(*args, **kwargs)


class _Package(types.ModuleType):
    def __setattr__(self, name, value):
        # The import system sets each submodule as an attribute of its package once it is imported.
        if (name in _CALLABLE_SUBMODULES and type(value) is types.ModuleType
                and value.__name__ == f"{__name__}.{name}"):
            value.__class__ = _CallableModule
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str):
    if name in _CALLABLE_SUBMODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")  # made callable by _Package.__setattr__
    if name in _API:
        from fashionlab import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_API) | set(_CALLABLE_SUBMODULES))
