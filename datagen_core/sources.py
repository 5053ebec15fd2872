"""Read prompt and seed rows from JSONL, JSON, CSV, Parquet, a local HF dataset or the HF Hub.

Every failure is an :class:`InputError` with one line that names the file (and line) and what to
do. A source's fingerprint is its content hash for local files, so a run id changes when the data
does and not when a file is moved.
"""

from __future__ import annotations

import functools
import gzip
import logging
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

from datagen_core.errors import ConfigError, InputError
from datagen_core.fingerprint import file_fingerprint, stable_hash
from datagen_core.records import SourceSpec
from datagen_core.registry import Registry

BUILTIN_PREFIX = "builtin:"


def read_yaml_mapping(path: str | Path, what: str, expected: str) -> dict[str, Any]:
    """A YAML config file as a dict (suites, recipes); a missing file, bad YAML or a non-mapping
    is one line naming the file."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise InputError(f"no such {what} file: {path}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {str(e).splitlines()[0]}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a YAML text file (not UTF-8)") from None
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror or e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected {expected}")
    return data


# Packages of seed sets (one NAME.jsonl each), declared as entry points like every plug-in:
# the built-in ones live in ``generators.seeds``, which the foundation never imports by name.
SEED_PACKAGES: Registry[Any] = Registry("seed-set package", "datagen.seeds")


def builtin_path(name: str) -> Path:
    """A seed set shipped in a package, e.g. ``builtin:general``."""
    folders = []
    for package in SEED_PACKAGES.names():
        module = SEED_PACKAGES.get(package)
        folders.append(Path(module.__file__).parent)
    for folder in folders:
        if (folder / f"{name}.jsonl").is_file():
            return folder / f"{name}.jsonl"
    avail = sorted({p.stem for f in folders for p in f.glob("*.jsonl")})
    raise InputError(f"no built-in seed set {name!r}: choose one of {', '.join(avail)}")


def load_rows(uri: str, limit: int | None = None) -> tuple[list[dict[str, Any]], SourceSpec]:
    """Rows (dicts) from ``uri`` and a :class:`SourceSpec` recording where they came from."""
    source = open_rows(uri, limit)
    rows = list(source)
    return rows, source.spec.model_copy(update={"rows": len(rows)})


class RowSource:
    """The rows of a source, read lazily: each pass over it reads the source again, a batch
    at a time, so a run over millions of rows holds only what it is working on.

    ``spec`` has the source's fingerprint (computed without reading the rows into memory);
    its ``rows`` count is None until a pass has counted them (``count``, after a full pass).
    """

    def __init__(self, uri: str, spec: SourceSpec, read: Callable[[], Iterator[dict[str, Any]]],
                 limit: int | None, verify: Callable[[], None] | None = None) -> None:
        self.uri = uri
        self.spec = spec
        self._read = read
        self._limit = limit
        self._verify = verify
        self.count: int | None = None

    def check(self) -> None:
        """Fail now (one line) on a source that cannot be read: its first row is read, and a
        compressed file is decompressed to its end (a truncated one fails only there). A bad
        row further on fails when a pass reaches it."""
        for _ in self:
            break
        if self._verify is not None:
            try:
                self._verify()
            except (OSError, EOFError) as e:
                raise InputError(f"{self.uri}: cannot read: "
                                 f"{getattr(e, 'strerror', None) or e}") from None

    def __iter__(self) -> Iterator[dict[str, Any]]:
        n = 0
        rows = self._read()
        try:
            for row in rows:
                if self._limit is not None and n >= self._limit:
                    break
                n += 1
                yield row
        except UnicodeDecodeError as e:
            raise InputError(f"{self.uri}: not UTF-8 text (byte {e.start}); is it a binary "
                             "file?") from None
        except (OSError, EOFError) as e:  # unreadable, a corrupt or truncated .gz
            raise InputError(f"{self.uri}: cannot read: "
                             f"{getattr(e, 'strerror', None) or e}") from None
        finally:
            close = getattr(rows, "close", None)
            if close is not None:
                close()
        self.count = n


def open_rows(uri: str, limit: int | None = None) -> RowSource:
    """The rows of ``uri`` as a lazy :class:`RowSource` (JSONL, CSV and Parquet are read a
    line or a batch at a time; HF datasets are memory-mapped Arrow; a .json file is one
    document and is parsed whole)."""
    if uri.startswith(BUILTIN_PREFIX):
        path = builtin_path(uri[len(BUILTIN_PREFIX):])
        return RowSource(uri, SourceSpec(uri=uri, fingerprint=file_fingerprint(str(path))),
                         functools.partial(_iter_jsonl, path), limit)
    if uri.startswith("hf://"):
        return _open_hub(uri, limit)
    path = Path(uri).expanduser()
    if not path.exists():
        raise InputError(f"no such file or folder: {uri}")
    if path.is_dir():
        return _open_local_dataset(path, uri, limit)
    name = path.name.lower()
    readers: dict[str, Callable[[Path], Iterator[dict[str, Any]]]] = {
        ".jsonl": _iter_jsonl, ".jsonl.gz": _iter_jsonl, ".ndjson": _iter_jsonl,
        ".json": _iter_json, ".parquet": _iter_parquet, ".csv": _iter_csv}
    reader = next((r for ext, r in readers.items() if name.endswith(ext)), None)
    if reader is None:
        raise InputError(f"{uri}: unknown file type; use .jsonl, .json, .csv or .parquet")
    try:
        fp = file_fingerprint(str(path))
    except OSError as e:
        raise InputError(f"{uri}: cannot read: {e.strerror or e}") from None
    verify = functools.partial(_read_to_end, path) if name.endswith(".gz") else None
    return RowSource(uri, SourceSpec(uri=uri, fingerprint=fp), functools.partial(reader, path),
                     limit, verify)


def _read_to_end(path: Path) -> None:
    with gzip.open(path, "rb") as f:
        while f.read(1 << 20):
            pass


def _iter_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    opener: Any = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError as e:
                raise InputError(
                    f"{path}:{lineno}: not valid JSON ({e}); fix or remove the line"
                ) from None
            if not isinstance(row, dict):
                raise InputError(
                    f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}"
                )
            yield row


def _iter_json(path: Path) -> Iterator[dict[str, Any]]:
    try:
        data = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON ({e})") from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise InputError(f"{path}: expected a list of JSON objects")
    yield from data


def _iter_parquet(path: Path) -> Iterator[dict[str, Any]]:
    import pyarrow.parquet as pq

    try:
        f = pq.ParquetFile(path)
    except Exception as e:
        raise InputError(f"{path}: cannot read as Parquet ({e})") from None
    with f:
        for batch in f.iter_batches(batch_size=_BATCH):
            yield from batch.to_pylist()


_BATCH = 2048


def _iter_csv(path: Path) -> Iterator[dict[str, Any]]:
    import csv

    ragged: list[int] = []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        try:
            for row in reader:
                if None in row or None in row.values():  # more, or fewer, fields than the header
                    ragged.append(reader.line_num)
                    row.pop(None, None)
                yield dict(row)
        except csv.Error as e:
            raise InputError(f"{path}:{reader.line_num}: not valid CSV ({e})") from None
        finally:
            if ragged:
                logging.getLogger("datagen.sources").warning(
                    "%s: %d row(s) do not have the header's %d fields (first at line %d): "
                    "extra fields are dropped, missing ones are empty", path, len(ragged),
                    len(reader.fieldnames or []), ragged[0])


def _iter_dataset(ds: Any) -> Iterator[dict[str, Any]]:
    """A datasets.Dataset's rows, a batch at a time (its Arrow table is memory-mapped)."""
    for batch in ds.iter(batch_size=_BATCH):
        cols = list(batch)
        for values in zip(*(batch[c] for c in cols)):
            yield dict(zip(cols, values))


def _open_local_dataset(path: Path, uri: str, limit: int | None) -> RowSource:
    """A folder written by ``Dataset.save_to_disk`` (or a DatasetDict's 'train' split)."""
    import datasets

    split = None
    try:
        ds = datasets.load_from_disk(str(path))
    except FileNotFoundError:
        raise InputError(
            f"{uri}: a folder, but not a saved HF dataset; point at a .jsonl/.parquet file inside"
        ) from None
    if isinstance(ds, datasets.DatasetDict):
        split = "train" if "train" in ds else next(iter(ds))
        ds = ds[split]
    fp = stable_hash({"uri": str(path.resolve()), "split": split, "fp": ds._fingerprint})
    return RowSource(uri, SourceSpec(uri=uri, fingerprint=fp),
                     functools.partial(_iter_dataset, ds), limit)


def parse_hf_uri(uri: str) -> tuple[str, str | None, str]:
    """``hf://org/name[/config][:split]`` -> (name, config, split); split defaults to train."""
    rest = uri[len("hf://"):]
    rest, _, split = rest.partition(":")
    parts = rest.strip("/").split("/")
    if len(parts) < 2 or not all(parts):
        raise InputError(f"bad dataset uri {uri!r}: use hf://org/name[/config]:split")
    name = "/".join(parts[:2])
    config = parts[2] if len(parts) > 2 else None
    return name, config, split or "train"


def hub_unreachable() -> str | None:
    """Why the HF Hub cannot be reached, or None. Probed once per process and host (a 3 s TCP
    connect), so an offline machine fails in seconds instead of sitting through the Hub
    client's retries for every data set; with ``HF_HUB_OFFLINE=1`` the datasets cache answers
    and nothing is probed."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return None
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None  # through a proxy a direct connect proves nothing: let the client try
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname
    return _probe(host or "huggingface.co")


@functools.cache
def _probe(host: str) -> str | None:
    try:
        socket.create_connection((host, 443), timeout=3).close()
    except OSError as e:
        return f"{host} is unreachable ({e.strerror or e})"
    return None


def check_hub(what: str) -> None:
    """Raise one clear line when ``what`` needs the HF Hub and it cannot be reached."""
    why = hub_unreachable()
    if why:
        raise InputError(f"cannot load {what} from the HF Hub: {why}; pass a local copy, or set "
                         "HF_HUB_OFFLINE=1 to read the datasets cache")


def _open_hub(uri: str, limit: int | None) -> RowSource:
    import datasets

    name, config, split = parse_hf_uri(uri)
    check_hub(uri)
    try:
        ds = datasets.load_dataset(name, config, split=split)
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(
            f"cannot load {uri} from the HF Hub ({msg}); check the name, split and network, "
            "or pass a local file"
        ) from None
    fp = stable_hash({"uri": uri, "fp": getattr(ds, "_fingerprint", None)})
    return RowSource(uri, SourceSpec(uri=uri, fingerprint=fp),
                     functools.partial(_iter_dataset, ds), limit)


def pick_column(rows: list[dict[str, Any]], column: str | None, uri: str,
                candidates: tuple[str, ...] = ("prompt", "instruction", "question", "input",
                                               "text", "query")) -> str:
    """The column to read prompts from: the one asked for, or the first usual name present."""
    if not rows:
        raise InputError(f"{uri}: no rows")
    cols = list(rows[0])
    if column is not None:
        if column not in cols:
            raise InputError(f"column {column!r} not in {uri}; columns are: {', '.join(cols)}")
        return column
    for c in candidates:
        if c in cols:
            return c
    raise InputError(f"{uri}: no prompt column found; pass --column (columns: {', '.join(cols)})")
