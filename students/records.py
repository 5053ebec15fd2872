"""Student records: what was trained, from what, and where the result lies.

A :class:`StudentRecord` is written as ``students/<id>/student.json`` (the manifest, the source of
truth) and mirrored into the ``students`` table. Both are plain data: this module imports neither
torch nor Ray, so the CLI and the store can read records cheaply.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from students.recipes import Config, Recipe

STUDENT_SCHEMA_VERSION = 1

StudentStatus = Literal["running", "finished", "failed"]


class DataRef(Config):
    """The training data of a student: a file, its content hash, and the run it came from."""

    path: str
    fingerprint: str
    run_id: str | None = None
    kind: Literal["sft", "dpo"] = "sft"

    @property
    def parent(self) -> str:
        """The student id's parent: the run's id and its data's content hash, else the file's
        content hash (moving or renaming the file keeps the id). A run's id alone is not enough:
        a run that finished with rate-limited requests gains rows when it is run again, and a
        student of the shorter data must not stand in for one of the completed data."""
        return f"{self.run_id}:{self.fingerprint}" if self.run_id else f"file:{self.fingerprint}"


class StudentRecord(Config):
    """One trained (or training, or failed) student."""

    schema_version: int = STUDENT_SCHEMA_VERSION
    student_id: str
    status: StudentStatus
    recipe: Recipe
    data: DataRef
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    train_seconds: float | None = None
    n_examples: int | None = None
    steps: int | None = None
    final_loss: float | None = None
    train_loss: float | None = None
    n_params: int | None = None
    path: str | None = Field(None, description="the saved model folder (model/)")
    device: str | None = None
    versions: dict[str, str] = Field(default_factory=dict)
    error: str | None = None

    @property
    def base_model(self) -> str:
        return self.recipe.base_model

    @property
    def model_path(self) -> Path | None:
        return Path(self.path) if self.path else None

    def store_row(self) -> dict[str, Any]:
        """The keyword arguments of :func:`metrics.students_store.upsert_student`."""
        return {
            "student_id": self.student_id,
            "base_model": self.recipe.base_model,
            "recipe": self.recipe.model_dump(mode="json"),
            "data_run_id": self.data.run_id,
            "status": self.status,
            "created_at": self.created_at,
            "finished_at": self.finished_at,
            "train_seconds": self.train_seconds,
            "final_loss": self.final_loss,
            "path": self.path,
            "error": self.error,
        }
