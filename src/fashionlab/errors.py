"""User-facing errors: the CLI prints their message on one line and exits non-zero, no traceback."""


class FashionlabError(Exception):
    """Base class for every error caused by bad input, bad files or the environment."""

    exit_code = 2


class DataError(FashionlabError):
    """Dataset files missing, malformed, or failing verification."""


class ConfigError(FashionlabError):
    """An invalid option value or config file."""


class RunError(FashionlabError):
    """A run folder that is missing, incomplete, locked or inconsistent."""
