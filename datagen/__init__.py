"""datagen: generate synthetic training data with any LM, and benchmark the LMs that generate it.

This module stays light: it re-exports records and errors only. The orchestration API lives in
:mod:`datagen.api` (``generate``, ``list_runs``, ``show_run``, ``export_run``); importing it pulls
in the engine and the store, but never torch, Ray or the CLI.
"""

from datagen_core.errors import (
    BackendError,
    ConfigError,
    DatagenError,
    InputError,
    MissingDependencyError,
    MissingKeyError,
)
from datagen_core.records import GeneratorSpec, GenRequest, GenResponse, Message, SamplingParams

__version__ = "0.1.0"

__all__ = [
    "BackendError",
    "ConfigError",
    "DatagenError",
    "GenRequest",
    "GenResponse",
    "GeneratorSpec",
    "InputError",
    "Message",
    "MissingDependencyError",
    "MissingKeyError",
    "SamplingParams",
    "__version__",
]
