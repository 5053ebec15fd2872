"""The error hierarchy.

Every error a user can cause or fix is a :class:`DatagenError` whose message is one line that says
what is wrong and what to do. The CLI prints that line and exits non-zero; anything else is a bug
and gets a traceback only with ``--debug``.
"""

from __future__ import annotations


class DatagenError(Exception):
    """Base class: the message is shown to the user as is."""

    exit_code = 1


class ConfigError(DatagenError):
    """A spec, option or config file is invalid."""

    exit_code = 2


class InputError(DatagenError):
    """An input file or dataset cannot be read as asked (missing, malformed, unknown column)."""

    exit_code = 2


class MissingDependencyError(DatagenError):
    """An optional dependency is not installed; the message carries the install command."""

    def __init__(self, what: str, package: str, extra: str | None = None,
                 hint: str | None = None) -> None:
        hint = hint or (f"pip install 'datagen[{extra}]'" if extra else f"pip install {package}")
        super().__init__(f"{what} needs the '{package}' package: {hint}")
        self.package = package


class MissingKeyError(DatagenError):
    """An API key is needed and not set."""

    def __init__(self, provider: str, env_var: str) -> None:
        super().__init__(
            f"No API key for {provider}: set {env_var} in the environment "
            f"(or name another variable with api_key_env=...)"
        )
        self.env_var = env_var


class BackendError(DatagenError):
    """A backend failed in a way that retrying will not fix (bad key, unknown model, ...)."""


class RunLockedError(DatagenError):
    """Another process is writing the same run."""


class RunFailedError(DatagenError):
    """A run went to its end but produced no usable dataset (no row kept, or more failed
    requests than allowed). ``result`` holds what it did produce; it is stored, with status
    ``failed``, so the same command resends only the failed requests."""

    def __init__(self, message: str, result: object = None) -> None:
        super().__init__(message)
        self.result = result


class NotFoundError(DatagenError):
    """A run, student or other named object does not exist in the workspace."""
