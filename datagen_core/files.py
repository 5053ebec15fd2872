"""Writing a file the user named (``export -o``, ``pairs export -o``, ``report -o``).

A regular file is replaced atomically (a temp file beside it, then a rename), so a crash never
leaves half an export. Anything else is written *through*, never renamed over: a symlink's target
is written (the link stays a link), and a device, FIFO or stream (``-o /dev/stdout``, whatever
fd 1 is) is opened for appending and written like a pipe, so ``-o /dev/full`` reports "no space"
instead of replacing the device node and ``-o /dev/stdout > file`` fills the file.
Every OS error becomes one :class:`~datagen_core.errors.InputError` line naming the path.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from datagen_core.errors import InputError


def write_output(path: str | os.PathLike[str], data: bytes | Iterable[bytes]) -> Path:
    """Write ``data`` (bytes, or chunks of bytes) to ``path``; returns the path as given."""
    given = Path(path)
    if not str(path):
        raise InputError("empty output path: give a file name, e.g. -o data.jsonl")
    chunks = [data] if isinstance(data, bytes) else data
    target = Path(os.path.realpath(given))  # through symlinks, chains included
    try:
        st = target.stat() if target.exists() else None
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise InputError(f"cannot write {given}: it is a directory")
        stream = os.path.abspath(given).startswith(("/dev/", "/proc/"))
        if stream or (st is not None and not stat.S_ISREG(st.st_mode)):
            # A device, FIFO or stream (/dev/stdout is a link to whatever fd 1 is, a file that
            # the shell already truncated included): write through, appending, never truncating
            # or renaming over it.
            with open(given, "ab") as f:
                for chunk in chunks:
                    f.write(chunk)
            return given
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                for chunk in chunks:
                    f.write(chunk)
            if st is not None:
                os.chmod(tmp, stat.S_IMODE(st.st_mode))  # an overwrite keeps the file's mode
            else:
                umask = os.umask(0)
                os.umask(umask)
                os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 is not what a new file gets
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except InputError:
        raise
    except OSError as e:
        raise InputError(f"cannot write {given}: {e.strerror or e}") from None
    return given


def parquet_bytes(rows: list[dict[str, Any]]) -> bytes:
    """A Parquet file's bytes from rows, for :func:`write_output`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows), sink)
    return bytes(sink.getvalue().to_pybytes())
