"""Run untrusted Python (a generated solution plus its tests) in a subprocess sandbox.

Used by the code-data validator and the MBPP/HumanEval scorers. Generated code is hostile by
default, so the child runs in a fresh interpreter (``-I -S -B``: standard library only, no
site-packages, no ``PYTHON*`` variables) with a minimal environment (no API keys), resource limits
(address space, CPU, processes, file size, no core dumps) and a wall-clock timeout, after which its
process group, and every process of its uid, is killed.

A launcher (this file run as a script, so no ``preexec_fn`` runs in a threaded parent) sets the
child up. As root (CI, dev machines) it puts it in new network and mount namespaces (no network at
all; a private size-capped tmpfs as ``/tmp``, cwd and HOME, bound over the other world-writable
dirs) and drops to a random unprivileged uid, so file permissions block writes elsewhere and
RLIMIT_NPROC (per uid) caps this run alone. Not root, an unprivileged user namespace is tried for
the same network and mount isolation. Where namespaces are refused the fallback is weaker: an
audit hook that refuses sockets and spawning programs, and a plain temp dir as cwd (``/tmp``
stays writable). ``DATAGEN_SANDBOX`` in the child, and :func:`sandbox_mechanisms`, say which
measures are in effect. Not covered: reads of world-readable files; memory is capped per process
(RLIMIT_AS), not per run.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
import os
import random
import resource
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
from typing import Any, Literal, NoReturn

Status = Literal["passed", "failed", "timeout", "memory", "error"]

_LAUNCH_ERROR, _MARK = 125, "datagen-sandbox:"  # how the launcher reports its own failure
_UID_BASE, _UID_SPAN, _NOBODY = 1_500_000_000, 1_000_000, 65534
_DISK_MB = 256  # the sandbox tmpfs size, and RLIMIT_FSIZE
_CLONE_NEWNS, _CLONE_NEWUSER, _CLONE_NEWNET = 0x20000, 0x10000000, 0x40000000
_MS_NOSUID, _MS_NODEV, _MS_BIND, _MS_REC, _MS_PRIVATE = 2, 4, 4096, 16384, 1 << 18
_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
_GUARD = """import sys, runpy
def _deny(event, args):
    if event.startswith(('socket.connect', 'socket.bind', 'socket.send', 'subprocess.',
                         'os.exec', 'os.spawn', 'os.posix_spawn', 'os.system', 'os.fork')):
        raise PermissionError(f'{event} is not allowed in the sandbox')
sys.addaudithook(_deny)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
"""


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
    """Run ``code`` as ``__main__`` in the sandbox; "passed" means exit code 0."""
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
        config = {
            "workdir": workdir, "uid": uid, "memory_mb": memory_mb, "cpu_s": cpu,
            "max_procs": max_procs, "namespaces": not os.environ.get("DATAGEN_SANDBOX_NO_NS"),
            "python": os.environ.get("DATAGEN_SANDBOX_PYTHON") or exe,
        }
        argv = [exe, "-I", "-S", "-B", os.path.abspath(__file__), json.dumps(config)]
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
    status = _classify(rc, stderr, timed_out, duration, cpu)
    return SandboxResult(status, rc, out.text(), stderr, duration)


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
    """The isolation in effect here: a subset of {"netns", "mountns", "uid", "audit-hook"}."""
    result = run_python("import os; print(os.environ.get('DATAGEN_SANDBOX', ''))", timeout_s=30)
    return {m for m in result.stdout.strip().split(",") if m} if result.passed else set()


# ---- the launcher: runs as a script, single-threaded, before the untrusted interpreter ----


def _mount(libc: Any, src: str, dst: str, fstype: str | None, flags: int, data: str = "") -> None:
    args = [s.encode() if s else None for s in (src, dst, fstype, data)]
    if libc.mount(args[0], args[1], args[2], ctypes.c_ulong(flags), args[3]) != 0:
        raise OSError(ctypes.get_errno(), f"mount {dst}: {os.strerror(ctypes.get_errno())}")


def _expose_interpreter(libc: Any) -> None:
    """Python may live under a dir the sandbox uid cannot enter (pyenv in /root): cover that dir
    with an empty tmpfs (hiding the rest of it) and bind the interpreter's prefix back in."""
    paths = sorted({sys.base_prefix, sys.base_exec_prefix, os.path.dirname(sys.executable)})
    todo = []
    for path in [p for p in paths if not any(p.startswith(q + "/") for q in paths)]:
        parts = path.split("/")
        tops = ["/".join(parts[:i]) for i in range(2, len(parts))]
        top = next((t for t in tops if not os.stat(t).st_mode & 0o001), None)
        if top:
            todo.append((top, path, os.open(path, os.O_PATH)))
    for top, path, fd in todo:
        if not os.path.ismount(top):
            _mount(libc, "tmpfs", top, "tmpfs", _MS_NOSUID | _MS_NODEV, "size=1m,mode=755")
        os.makedirs(path, exist_ok=True)
        _mount(libc, f"/proc/self/fd/{fd}", path, None, _MS_BIND | _MS_REC)


def _launch(cfg: dict[str, Any]) -> NoReturn:
    libc = ctypes.CDLL(None, use_errno=True)
    root, uid, gid = os.geteuid() == 0, os.getuid(), os.getgid()
    if root:
        uid = gid = cfg["uid"]
    active: list[str] = []
    home = cfg["workdir"]
    user = 0 if root else _CLONE_NEWUSER  # an unprivileged user namespace, when not root
    attempts = [user | _CLONE_NEWNS | _CLONE_NEWNET, user | _CLONE_NEWNET]
    flags = next((f for f in attempts if cfg["namespaces"] and libc.unshare(f) == 0), 0)
    if flags & _CLONE_NEWUSER:  # keep our own ids inside; we hold every capability in the ns
        maps = [("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")]
        for name, text in maps:
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
    if flags & _CLONE_NEWNS:
        _mount(libc, "none", "/", None, _MS_REC | _MS_PRIVATE)
        if root and cfg["python"] == os.path.realpath(sys.executable):
            _expose_interpreter(libc)
        with open(os.path.join(cfg["workdir"], "main.py"), "rb") as src:
            code = src.read()
        opts = f"size={_DISK_MB}m,mode=700,uid={uid},gid={gid}"
        _mount(libc, "tmpfs", "/tmp", "tmpfs", _MS_NOSUID | _MS_NODEV, opts)
        with open("/tmp/main.py", "wb") as dst:
            dst.write(code)
        os.chown("/tmp/main.py", uid, gid)
        for d in ("/var/tmp", "/dev/shm", "/run/lock", "/var/lock"):
            if os.path.isdir(d) and not os.path.islink(d) and os.stat(d).st_mode & 0o002:
                _mount(libc, "/tmp", d, None, _MS_BIND)
        active.append("mountns")
        home = "/tmp"
    mb = 1 << 20
    limits = [(resource.RLIMIT_AS, cfg["memory_mb"] * mb), (resource.RLIMIT_CORE, 0),
              (resource.RLIMIT_NPROC, cfg["max_procs"]), (resource.RLIMIT_FSIZE, _DISK_MB * mb),
              (resource.RLIMIT_NOFILE, 1024)]
    for res, value in limits:
        resource.setrlimit(res, (value, value))
    resource.setrlimit(resource.RLIMIT_CPU, (cfg["cpu_s"], cfg["cpu_s"] + 1))  # SIGXCPU, SIGKILL
    if root:  # never run untrusted code as root; limits are set, so NPROC binds from here on
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
        if os.geteuid() == 0 or os.getegid() == 0:
            raise OSError("could not drop root privileges")
        active.append("uid")
    libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS: setuid binaries cannot regain root
    active.append("netns" if flags & _CLONE_NEWNET else "audit-hook")
    os.chdir(home)
    env = dict(os.environ, HOME=home, TMPDIR=home, DATAGEN_SANDBOX=",".join(active))
    guard = [] if flags & _CLONE_NEWNET else ["-c", _GUARD]
    os.execve(cfg["python"], [cfg["python"], "-I", "-S", "-B", *guard, "main.py"], env)


if __name__ == "__main__":
    try:
        _launch(json.loads(sys.argv[1]))
    except Exception as e:
        hint = " (set DATAGEN_SANDBOX_PYTHON to a python every uid can run)"
        hint = hint if isinstance(e, PermissionError) else ""
        sys.stderr.write(f"{_MARK} {type(e).__name__}: {e}{hint}\n")
        sys.stderr.flush()
        os._exit(_LAUNCH_ERROR)
