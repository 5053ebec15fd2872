"""Side tables a method reads besides its seed set: personas, templates, slot values.

A table is named like a seed set (a ``.jsonl``/``.json``/``.csv``/``.parquet`` file, a saved HF
dataset folder, ``hf://org/name:split``, ``builtin:NAME``) or is a ``.txt`` file with one value
per line (blank lines and lines starting with ``#`` are skipped). Its content fingerprint enters
the run id (see :meth:`generators.methods.base.Method.non_default_args`), so editing a persona or
template file makes a new run instead of silently reusing the old one's id.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datagen_core.errors import InputError
from datagen_core.fingerprint import file_fingerprint, stable_hash
from datagen_core.sources import load_rows


@dataclass(frozen=True)
class Table:
    uri: str
    rows: list[dict[str, Any]]
    fingerprint: str

    def column(self, name: str | None, guesses: tuple[str, ...], what: str) -> str:
        """The column holding ``what``: ``name`` if given, else the first of ``guesses``
        present, else the only column; an error names the columns there are."""
        if not self.rows:
            raise InputError(f"{self.uri}: no rows")
        cols = list(self.rows[0])
        if name is not None:
            if name not in cols:
                raise InputError(f"column {name!r} not in {self.uri}; columns are: "
                                 f"{', '.join(cols)}")
            return name
        found = next((g for g in guesses if g in cols), None)
        if found is None and len(cols) == 1:
            found = cols[0]
        if found is None:
            raise InputError(f"{self.uri}: which column holds the {what}? name it (columns: "
                             f"{', '.join(cols)})")
        return found

    def texts(self, column: str) -> list[str]:
        """The column's values as stripped text; an empty value is an error with its row."""
        out = []
        for i, row in enumerate(self.rows):
            value = row.get(column)
            if not isinstance(value, str) or not value.strip():
                raise InputError(f"{self.uri}: row {i + 1}: column {column!r} is empty or not "
                                 "text")
            out.append(value.strip())
        return out

    def row_id(self, i: int) -> str:
        return str(self.rows[i].get("id", i))


def load_table(uri: str, limit: int | None = None) -> Table:
    if uri.lower().endswith(".txt"):
        path = Path(uri).expanduser()
        if not path.is_file():
            raise InputError(f"no such file: {uri}")
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as e:
            raise InputError(f"{uri}: not UTF-8 text (byte {e.start})") from None
        values = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
        rows: list[dict[str, Any]] = [{"text": v} for v in values[:limit]]
        return Table(uri, rows, file_fingerprint(str(path)))
    rows, src = load_rows(uri, limit=limit)
    return Table(uri, rows, src.fingerprint or stable_hash(rows))
