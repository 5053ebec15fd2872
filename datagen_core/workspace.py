"""Workspace paths: the one folder that holds a user's runs, students, caches and database."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

DEFAULT_WORKSPACE = "datagen-workspace"
#: a trained student's model folder inside ``students/<id>/``
STUDENT_MODEL_DIR = "model"


def default_cache_dir() -> Path:
    """User-level cache for converted local models, shared by all workspaces."""
    env = os.environ.get("DATAGEN_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "datagen"


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def resolve(cls, path: str | os.PathLike[str] | None = None) -> Workspace:
        """``path``, else ``$DATAGEN_WORKSPACE``, else ``./datagen-workspace``."""
        p = path or os.environ.get("DATAGEN_WORKSPACE") or DEFAULT_WORKSPACE
        return cls(Path(p).expanduser().resolve())

    @property
    def db_path(self) -> Path:
        return self.root / "datagen.duckdb"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def students_dir(self) -> Path:
        return self.root / "students"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / run_id

    def student_model_dir(self, student_id: str) -> Path:
        """Where a trained student's merged model and tokenizer are saved."""
        return self.students_dir / student_id / STUDENT_MODEL_DIR

    def ensure(self) -> Workspace:
        for d in (self.root, self.runs_dir, self.students_dir, self.cache_dir):
            d.mkdir(parents=True, exist_ok=True)
        return self


def run_is_live(run_dir: Path) -> bool:
    """Whether a process holds the run now. The kernel drops a dead process's lock, so a run
    whose process was killed (``kill -9``, a crash, a power cut) is not live."""
    import fcntl

    lock = run_dir / ".run.lock"
    if not lock.exists():
        return False
    try:
        with open(lock, "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(f, fcntl.LOCK_UN)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold a run's folder for this process (an advisory ``flock`` released on exit, even by
    ``kill -9``). Refused at once, with :class:`RunLockedError`, while another process holds it."""
    import fcntl

    from datagen_core.errors import RunLockedError

    with open(run_dir / ".run.lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLockedError(
                f"run {run_dir.name} is being written by another process; wait for it to "
                "finish or stop it") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
