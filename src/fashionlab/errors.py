"""User-facing errors: the CLI prints their message on one line and exits non-zero, no traceback."""

import importlib


class FashionlabError(Exception):
    """Base class for every error caused by bad input, bad files or the environment."""

    exit_code = 2


class DataError(FashionlabError):
    """Dataset files missing, malformed, or failing verification."""


class ConfigError(FashionlabError):
    """An invalid option value or config file."""


class RunError(FashionlabError):
    """A run folder that is missing, incomplete, locked or inconsistent."""


def require_package(feature: str, package: str, imports: tuple[str, ...], install: str) -> None:
    """Raise a one-line ConfigError unless `imports` of the optional `package` work ("module", or "module:name" as
    `from module import name`): for `feature` (a flag or command), saying how to install it (missing) or that it
    cannot be used (another error, e.g. a version that does not fit this torch)."""
    try:
        for spec in imports:
            module, _, name = spec.partition(":")
            imported = importlib.import_module(module)
            if name:
                getattr(imported, name)
    except ModuleNotFoundError:
        raise ConfigError(f"{feature} needs the {package} package, which is not installed: {install}") from None
    except Exception as e:  # noqa: BLE001 - a package's own import errors are untyped
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ConfigError(f"{feature}: the {package} package cannot be used ({first}); reinstall it: "
                          f"{install}") from None
