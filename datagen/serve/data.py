"""The workspace a server shows: its database opened read-only, its run folders, and the one
door out of the workspace that must stay shut (file paths).

DuckDB lets a process hold one file with one configuration at a time, and the server answers
requests on several threads; so every query goes through :meth:`ServedWorkspace.query`, which
takes a lock, and connections stay short (open, read, close) so that a ``datagen generate`` or
``datagen bench`` in another process gets the file between two page views.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from datagen.runs import true_status
from datagen_core.errors import NotFoundError
from datagen_core.workspace import Workspace
from metrics.store import Store

T = TypeVar("T")


class ServedWorkspace:
    """One workspace, its store read-only (labels are the one write), and who is labelling."""

    def __init__(self, workspace: str | Path | None, annotator: str = "local") -> None:
        Store.open_existing(workspace)  # no database: one line saying how to make one
        self.workspace = Workspace.resolve(workspace)
        # One write before serving: an older workspace gets the current schema (the labels
        # table, request prompts) through the same append-only migrations as any command.
        Store(self.workspace.db_path).migrate()
        self.store = Store(self.workspace.db_path, read_only=True)
        self.annotator = annotator
        self._lock = threading.Lock()

    def query(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(store, *args, **kwargs)``, one at a time."""
        with self._lock:
            return fn(self.store, *args, **kwargs)

    def run(self, run_id: str) -> dict[str, Any]:
        """A run's summary by its full id (a page address names one run, never a prefix), its
        status as ``datagen runs show`` tells it; NotFoundError when there is no such run."""
        summary = self.query(Store.run_summary, run_id)
        return true_status(self.workspace, summary)

    def run_files(self, run_id: str) -> list[tuple[str, int]]:
        """The files of a run's folder (name, bytes), for links."""
        folder = self.workspace.run_dir(run_id)
        if not folder.is_dir():
            return []
        return sorted((p.name, p.stat().st_size) for p in folder.iterdir()
                      if p.is_file() and not p.name.startswith("."))

    def run_file(self, run_id: str, name: str) -> Path:
        """A file of a known run's folder, after resolving links: nothing outside the run's
        folder (``..``, an absolute path, a link out of it, a hidden lock file) is ever
        returned, whatever the address said."""
        self.run(run_id)  # a run this workspace knows, or NotFoundError
        folder = self.workspace.run_dir(run_id).resolve()
        path = (folder / name).resolve()
        if (path.parent != folder or name.startswith(".") or not path.is_file()
                or not path.is_relative_to(self.workspace.root.resolve())):
            raise NotFoundError(f"no file {name!r} in run {run_id}")
        return path
