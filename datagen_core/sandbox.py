"""Run untrusted Python (a generated solution plus its tests) in a subprocess sandbox.

Used by the code-data validator and the MBPP/HumanEval scorers. Generated code is hostile by
default: it must not read or write the user's files (keys in ``~/.ssh``, a ``~/.bashrc`` that
runs later outside any sandbox, the workspace and its database) nor reach the network, whether
datagen runs as root or as an ordinary user. A fresh interpreter (``-I -S -B``: standard library
only), a minimal environment (no API keys), resource limits and a wall-clock timeout are not
enough for that; the code's view of the machine has to be cut down.

So the preferred isolation is bubblewrap: every namespace unshared, a root filesystem of
read-only system dirs and the interpreter only, a private tmpfs as cwd/HOME/``/tmp`` (see
:mod:`datagen_core.sandbox_launch`, the launcher that sets the limits and execs it). Root without
bwrap falls back to namespaces set up by the launcher plus a random unprivileged uid, and only
when the network namespace is granted. Anything weaker (an ordinary user without bwrap, where
user namespaces are refused: an audit hook that ``ctypes`` bypasses, the user's own uid) is
refused with :class:`SandboxUnavailableError` unless ``DATAGEN_SANDBOX_UNSAFE=1`` accepts the
risk. The choice is probed once per process (an actual run) and cached.

Killing is by process group and, as root, by the per-run uid; under bwrap the pid namespace dies
with its init, which dies with bwrap (``--die-with-parent``). Not covered: memory is capped per
process (RLIMIT_AS), not per run; an ordinary user's RLIMIT_NPROC counts their own processes, so
a run gets ``max_procs`` more than the user had when it started.

Test hooks: ``DATAGEN_SANDBOX_NO_BWRAP`` (ignore bwrap), ``DATAGEN_SANDBOX_NO_NS`` (no namespaces
set up by the launcher), ``DATAGEN_SANDBOX_PYTHON`` (the interpreter run inside).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

try:
    from datagen_core.errors import DatagenError as _Base
except ImportError:  # loaded by file path with the bare system Python (the tests' unprivileged run)
    _Base = Exception  # type: ignore[assignment,misc]

Status = Literal["passed", "failed", "timeout", "memory", "error"]
Mode = Literal["bwrap", "ns", "weak"]

_LAUNCHER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sandbox_launch.py")
_LAUNCH_ERROR, _MARK = 125, "datagen-sandbox:"  # as in sandbox_launch
_UID_BASE, _UID_SPAN, _NOBODY = 1_500_000_000, 1_000_000, 65534
_DISK_MB = 256  # the sandbox tmpfs size, and RLIMIT_FSIZE
_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
REFUSAL = ("cannot run generated code safely here ({why}): install bubblewrap "
           "(apt install bubblewrap) or set DATAGEN_SANDBOX_UNSAFE=1 to accept the risk")


class SandboxUnavailableError(_Base):
    """No isolation that keeps generated code from the user's files and the network."""


@dataclass(frozen=True)
class SandboxResult:
    """What one sandboxed run did; ``stdout``/``stderr`` are capped (head and tail kept)."""

    status: Status
    returncode: int | None
    stdout: str
    stderr: str
    duration_s: float

    @property
    def passed(self) -> bool:
        return self.status == "passed"


class _Capped:
    """Keeps the first 3/4 and the last 1/4 of a stream, so a traceback's last line survives."""

    def __init__(self, cap: int) -> None:
        self.cap, self.total, self.head, self.tail = cap, 0, bytearray(), bytearray()

    def add(self, data: bytes) -> None:
        self.total += len(data)
        room = self.cap - self.cap // 4 - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data and self.cap // 4:
            self.tail = (self.tail + data)[-(self.cap // 4) :]

    def text(self) -> str:
        dropped = self.total - len(self.head) - len(self.tail)
        mid = f"\n[... {dropped} bytes truncated ...]\n".encode() if dropped else b""
        return bytes(self.head + mid + self.tail).decode("utf-8", "replace")


def _pids_of(uid: int) -> list[int]:
    """Live (not zombie) processes whose real uid is ``uid``, from /proc."""
    pids = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError, KeyError, ValueError, IndexError):
            with open(f"/proc/{name}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
            if int(fields["Uid"].split()[0]) == uid and fields["State"].split()[0] not in "ZX":
                pids.append(int(name))
    return pids


def _kill_uid(uid: int) -> None:
    """Kill every process of a per-run uid: catches children that left the process group."""
    for _ in range(200):
        pids = _pids_of(uid)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)


_uids_in_use: set[int] = set()
_uid_lock = threading.Lock()


def _pick_uid() -> int:
    """A random unused uid in a high range, or ``nobody`` where the uid map is too small."""
    with open("/proc/self/uid_map") as f:
        extents = [tuple(map(int, line.split())) for line in f if line.strip()]
    if not any(lo <= _UID_BASE and lo + n >= _UID_BASE + _UID_SPAN for lo, _, n in extents):
        return _NOBODY
    with _uid_lock:
        while True:
            uid = _UID_BASE + random.randrange(_UID_SPAN)
            if uid not in _uids_in_use and not _pids_of(uid):
                _uids_in_use.add(uid)
                return uid


def run_python(
    code: str, *, timeout_s: float = 10, memory_mb: int = 1024, cpu_s: int | None = None,
    max_procs: int = 64, max_output_bytes: int = 64_000, stdin: str | None = None,
) -> SandboxResult:
    """Run ``code`` as ``__main__`` in the sandbox; "passed" means exit code 0. Raises
    :class:`SandboxUnavailableError` where no safe isolation exists (and no opt-in)."""
    return _run(code, require_sandbox(), timeout_s=timeout_s, memory_mb=memory_mb, cpu_s=cpu_s,
                max_procs=max_procs, max_output_bytes=max_output_bytes, stdin=stdin)


def _run(
    code: str, mode: Mode, *, timeout_s: float = 10, memory_mb: int = 1024,
    cpu_s: int | None = None, max_procs: int = 64, max_output_bytes: int = 64_000,
    stdin: str | None = None,
) -> SandboxResult:
    start = time.monotonic()
    uid = _pick_uid() if os.geteuid() == 0 else None
    cpu = cpu_s if cpu_s is not None else math.ceil(timeout_s) + 1
    workdir = tempfile.mkdtemp(prefix="datagen-sandbox-")
    proc: subprocess.Popen[bytes] | None = None
    out, err = _Capped(max_output_bytes), _Capped(max_output_bytes)
    try:
        with open(os.path.join(workdir, "main.py"), "w", encoding="utf-8") as f:
            f.write(code)
        if uid is not None:
            for path in (workdir, os.path.join(workdir, "main.py")):
                os.chown(path, uid, uid)
        exe = os.path.realpath(sys.executable)
        bwrap = _bwrap()
        config = {
            "mode": mode, "workdir": workdir, "uid": uid, "memory_mb": memory_mb, "cpu_s": cpu,
            "max_procs": max_procs, "disk_mb": _DISK_MB,
            "namespaces": not os.environ.get("DATAGEN_SANDBOX_NO_NS"),
            "python": os.path.realpath(os.environ.get("DATAGEN_SANDBOX_PYTHON") or exe),
            "bwrap": bwrap[0] if bwrap else None, "bwrap_features": bwrap[1] if bwrap else [],
        }
        argv = [exe, "-I", "-S", "-B", _LAUNCHER, json.dumps(config)]
        with tempfile.TemporaryFile() as stdin_file:
            stdin_file.write((stdin or "").encode())
            stdin_file.seek(0)
            proc = subprocess.Popen(
                argv, cwd=workdir, env=dict(_ENV), stdin=stdin_file, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, start_new_session=True,
            )
        timed_out = _collect(proc, out, err, start + timeout_s)
    except (OSError, UnicodeError) as e:  # could not start it: not the program's fault
        return SandboxResult("error", None, "", f"{_MARK} {e}", time.monotonic() - start)
    finally:
        if proc is not None:
            _kill_all(proc, uid)
        shutil.rmtree(workdir, ignore_errors=True)
        with _uid_lock:
            _uids_in_use.discard(uid or 0)
    duration, rc, stderr = time.monotonic() - start, proc.returncode, err.text()
    if mode == "bwrap" and rc is not None and 128 < rc <= 128 + 64 and not stderr.startswith(
            "bwrap: "):
        rc = -(rc - 128)  # bwrap reports a child killed by signal N as 128 + N: say it as Popen
    status = _classify(rc, stderr, timed_out, duration, cpu)
    return SandboxResult(status, rc, out.text(), stderr, duration)


_BWRAP_FEATURES = ("disable-userns", "size")
_bwrap_cache: dict[str, tuple[str, list[str]] | None] = {}


def _bwrap() -> tuple[str, list[str]] | None:
    """bwrap's path and which of the options we use beyond 0.4 it has, or None."""
    path = shutil.which("bwrap")
    if path is None or os.environ.get("DATAGEN_SANDBOX_NO_BWRAP"):
        return None
    if path not in _bwrap_cache:
        try:
            text = subprocess.run([path, "--help"], capture_output=True, text=True,
                                  timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            _bwrap_cache[path] = None
        else:
            _bwrap_cache[path] = (path, [f for f in _BWRAP_FEATURES if f"--{f} " in text])
    return _bwrap_cache[path]


_modes: dict[tuple[Any, ...], Mode | str] = {}
_modes_lock = threading.Lock()
_PROBE = "import os, sys; sys.stdout.write(os.environ.get('DATAGEN_SANDBOX', ''))"


def require_sandbox() -> Mode:
    """The isolation runs get here: ``bwrap``; ``ns`` (root, no bwrap, a network namespace);
    ``weak`` (only with ``DATAGEN_SANDBOX_UNSAFE=1``). Probed by a real run once per process
    and setting; raises :class:`SandboxUnavailableError` where none is safe."""
    env = os.environ
    key = (os.geteuid(), shutil.which("bwrap"), *(env.get(f"DATAGEN_SANDBOX_{k}") for k in
                                     ("NO_NS", "NO_BWRAP", "PYTHON", "UNSAFE")))
    with _modes_lock:
        if key not in _modes:
            _modes[key] = _probe()
        found = _modes[key]
    if found in ("bwrap", "ns", "weak"):
        return found
    raise SandboxUnavailableError(REFUSAL.format(why=found))


def _probe() -> Mode | str:
    """The first mode that works here, else why none does."""
    why = []
    if _bwrap() is None:
        why.append("no bwrap" if not shutil.which("bwrap") else "bwrap disabled")
    else:
        result = _run(_PROBE, "bwrap", timeout_s=30)
        if result.passed and "netns" in result.stdout.split(","):
            return "bwrap"
        why.append(f"bwrap failed: {(result.stderr.strip().splitlines() or ['?'])[-1][:200]}")
    if os.geteuid() != 0:
        why.append("not root, so no fallback")
    elif os.environ.get("DATAGEN_SANDBOX_NO_NS"):
        why.append("namespaces disabled")
    else:
        result = _run(_PROBE, "ns", timeout_s=30)
        if result.passed and "netns" in result.stdout.split(","):
            return "ns"
        why.append(f"no network namespace: {(result.stderr.strip().splitlines() or ['?'])[-1]}")
    if os.environ.get("DATAGEN_SANDBOX_UNSAFE") == "1":
        return "weak"
    return "; ".join(why)


def _collect(proc: subprocess.Popen[bytes], out: _Capped, err: _Capped, deadline: float) -> bool:
    """Read both pipes until they close, the main process has exited, or the deadline (then
    True). A grandchild holding a pipe open does not keep the run going."""
    assert proc.stdout is not None and proc.stderr is not None
    sinks = {proc.stdout.fileno(): out, proc.stderr.fileno(): err}
    exited_at: float | None = None
    with selectors.DefaultSelector() as sel:
        for fd in sinks:
            sel.register(fd, selectors.EVENT_READ)
        while sel.get_map():
            now = time.monotonic()
            if now >= deadline:
                return True
            if exited_at is None and proc.poll() is not None:
                exited_at = now
            if exited_at is not None and now - exited_at > 0.2:
                break
            for key, _ in sel.select(min(deadline - now, 0.05)):
                if chunk := os.read(key.fd, 65536):
                    sinks[key.fd].add(chunk)
                else:
                    sel.unregister(key.fd)
    try:
        proc.wait(max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        return True
    return False


def _kill_all(proc: subprocess.Popen[bytes], uid: int | None) -> None:
    with contextlib.suppress(OSError):
        os.killpg(proc.pid, signal.SIGKILL)
    if uid is not None and uid != _NOBODY:  # never sweep a uid that other programs may use
        _kill_uid(uid)
    proc.wait()
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


def _classify(rc: int, stderr: str, timed_out: bool, duration: float, cpu_s: int) -> Status:
    if rc == _LAUNCH_ERROR and stderr.startswith(_MARK):
        return "error"
    if rc == 1 and stderr.startswith("bwrap: "):  # bwrap could not set the sandbox up
        return "error"
    if timed_out or rc == -signal.SIGXCPU:
        return "timeout"
    if rc == 0:
        return "passed"
    if "MemoryError" in stderr[-2000:]:
        return "memory"
    if rc == -signal.SIGKILL:  # not ours: the OOM killer, or the CPU hard limit
        return "timeout" if duration >= cpu_s else "memory"
    return "failed"


_executor = ThreadPoolExecutor(max_workers=128, thread_name_prefix="sandbox")  # threads: lazy


async def arun_python(code: str, **kwargs: Any) -> SandboxResult:
    """:func:`run_python` on a worker thread (bound concurrency with a semaphore). A cancelled
    call's child still runs to its own timeout."""
    import asyncio

    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_executor, partial(run_python, code, **kwargs))


def assemble_program(
    solution: str, tests: list[str] | str, setup: str = "", entry_point_check: str | None = None
) -> str:
    """setup, solution, test asserts and an optional ``check(entry_point)`` call, in order."""
    test_code = tests if isinstance(tests, str) else "\n".join(tests)
    parts = [setup, solution, test_code, entry_point_check or ""]
    return "\n\n".join(p.strip("\n") for p in parts if p.strip()) + "\n"


def check_program(
    solution: str, tests: list[str] | str, setup: str = "", entry_point_check: str | None = None,
    *, timeout_s: float = 10, memory_mb: int = 1024,
) -> SandboxResult:
    """Run a solution against its tests; passed = every assert held (exit code 0)."""
    program = assemble_program(solution, tests, setup, entry_point_check)
    return run_python(program, timeout_s=timeout_s, memory_mb=memory_mb)


def sandbox_mechanisms() -> set[str]:
    """The isolation in effect here: a subset of {"bwrap", "userns", "mountns", "netns",
    "pidns", "uid", "audit-hook"}; raises :class:`SandboxUnavailableError` where none is safe."""
    result = run_python("import os; print(os.environ.get('DATAGEN_SANDBOX', ''))", timeout_s=30)
    return {m for m in result.stdout.strip().split(",") if m} if result.passed else set()
