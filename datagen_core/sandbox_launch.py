"""The sandbox launcher: run as a script (``python -I -S -B sandbox_launch.py CONFIG``) by
:mod:`datagen_core.sandbox`, single-threaded, between the parent and the untrusted interpreter.

It sets what must be set before the untrusted code starts and is inherited from here on: the
resource limits, the uid (as root), ``no_new_privs``; then it execs the isolation. Standard
library only, and nothing from ``datagen``: it runs in an isolated interpreter, and the tests'
unprivileged driver loads the sandbox from the bare system Python.

Modes (chosen by the parent, which probes them):

``bwrap``
    bubblewrap runs the interpreter in new user, mount, network, pid, ipc, uts and cgroup
    namespaces, with a root filesystem that holds only read-only binds of what Python needs, a
    size-capped tmpfs as ``/tmp`` (cwd and HOME, holding main.py) and nothing of the user's:
    no home, no workspace, no network. As root the launcher first drops to the parent's random
    per-run uid (so RLIMIT_NPROC, per uid, caps this run alone and a sweep of that uid kills
    leftovers); bwrap then needs the interpreter reachable by that uid, so a private mount
    namespace of the launcher covers the unreachable dir (pyenv under ``/root``) with a tmpfs
    holding only the interpreter's prefix.
``ns``
    root without bwrap: new network and mount namespaces set up here, a private tmpfs over
    ``/tmp`` and the other world-writable dirs, the random uid. The user's files stay visible,
    but only as a uid that owns nothing; refused (an error) when the network namespace is.
``weak``
    the explicit opt-in (``DATAGEN_SANDBOX_UNSAFE=1``) where neither is available: namespaces
    when they are granted, else an audit hook against sockets and spawning, which ``ctypes``
    bypasses.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import resource
import sys
from typing import Any, NoReturn

LAUNCH_ERROR, MARK = 125, "datagen-sandbox:"  # how the launcher reports its own failure
_CLONE_NEWNS, _CLONE_NEWUSER, _CLONE_NEWNET = 0x20000, 0x10000000, 0x40000000
_MS_NOSUID, _MS_NODEV, _MS_BIND, _MS_REC, _MS_PRIVATE = 2, 4, 4096, 16384, 1 << 18
_PR_SET_NO_NEW_PRIVS = 38
_INSIDE_ID = 65534  # the uid/gid the code sees inside bwrap when we are not root
# Host files an interpreter may read; nothing about users (no passwd), no secrets.
_ETC = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime",
        "/etc/alternatives")
_GUARD = """import sys, runpy
def _deny(event, args):
    if event.startswith(('socket.connect', 'socket.bind', 'socket.send', 'subprocess.',
                         'os.exec', 'os.spawn', 'os.posix_spawn', 'os.system', 'os.fork')):
        raise PermissionError(f'{event} is not allowed in the sandbox')
sys.addaudithook(_deny)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
"""


def _mount(libc: Any, src: str, dst: str, fstype: str | None, flags: int, data: str = "") -> None:
    args = [s.encode() if s else None for s in (src, dst, fstype, data)]
    if libc.mount(args[0], args[1], args[2], ctypes.c_ulong(flags), args[3]) != 0:
        raise OSError(ctypes.get_errno(), f"mount {dst}: {os.strerror(ctypes.get_errno())}")


def python_dirs(python: str) -> list[str]:
    """The dirs an interpreter needs: this one's prefixes, or another's ``<prefix>``."""
    if python == os.path.realpath(sys.executable):
        paths = {sys.base_prefix, sys.base_exec_prefix, os.path.dirname(python)}
    else:
        paths = {os.path.dirname(os.path.dirname(python))}
    paths = {os.path.realpath(p) for p in paths}
    return sorted(p for p in paths if not any(p.startswith(q + "/") for q in paths if q != "/"))


def _expose(libc: Any, paths: list[str]) -> None:
    """Make dirs reachable by an unprivileged uid, in this private mount namespace: an empty
    tmpfs covers the first dir on the way that others cannot enter (hiding the rest of it), and
    the dir is bound back in."""
    todo = []
    for path in paths:
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
        os.close(fd)


def _tasks_of(uid: int) -> int:
    """Tasks (threads count: RLIMIT_NPROC counts them) whose real uid is ``uid``."""
    total = 0
    for name in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError, KeyError, ValueError, IndexError):
            with open(f"/proc/{name}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
            if int(fields["Uid"].split()[0]) == uid:
                total += int(fields["Threads"])
    return total


def _set_limits(cfg: dict[str, Any], root: bool) -> None:
    # RLIMIT_NPROC counts every task of the real uid. As root that is the fresh per-run uid, so
    # the cap is this run's; otherwise the user's own processes count too: allow this run
    # max_procs more than the user has now.
    nproc = cfg["max_procs"] if root else _tasks_of(os.getuid()) + cfg["max_procs"]
    mb = 1 << 20
    limits = [(resource.RLIMIT_AS, cfg["memory_mb"] * mb), (resource.RLIMIT_CORE, 0),
              (resource.RLIMIT_NPROC, nproc), (resource.RLIMIT_FSIZE, cfg["disk_mb"] * mb),
              (resource.RLIMIT_NOFILE, 1024)]
    for res, value in limits:
        resource.setrlimit(res, (value, value))
    resource.setrlimit(resource.RLIMIT_CPU, (cfg["cpu_s"], cfg["cpu_s"] + 1))  # SIGXCPU, SIGKILL


def _drop_root(uid: int) -> None:
    """Never run untrusted code as root; the limits are set, so NPROC binds from here on."""
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    if os.geteuid() == 0 or os.getegid() == 0:
        raise OSError("could not drop root privileges")


def bwrap_argv(cfg: dict[str, Any], main_fd: int, uid: int, env: dict[str, str]) -> list[str]:
    """The bubblewrap command line: every namespace, only read-only system dirs, a tmpfs /tmp."""
    features, size = cfg["bwrap_features"], str(cfg["disk_mb"] << 20)
    argv = [cfg["bwrap"], "--unshare-all", "--unshare-user", "--die-with-parent", "--new-session",
            "--uid", str(uid), "--gid", str(uid), "--clearenv"]
    if "disable-userns" in features:
        argv.append("--disable-userns")  # no nested user namespace to regain capabilities in
    for key, value in env.items():
        argv += ["--setenv", key, value]
    argv += ["--ro-bind", "/usr", "/usr"]
    for d in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(d):
            argv += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            argv += ["--ro-bind", d, d]
    for d in python_dirs(cfg["python"]):
        if not d.startswith("/usr/"):
            argv += ["--ro-bind", d, d]
    for path in _ETC:
        argv += ["--ro-bind-try", path, path]
    sized = ["--size", size] if "size" in features else []
    argv += ["--proc", "/proc", "--dev", "/dev", *sized, "--tmpfs", "/dev/shm",
             *sized, "--tmpfs", "/tmp", "--file", str(main_fd), "/tmp/main.py",
             "--remount-ro", "/", "--chdir", "/tmp"]
    return [*argv, cfg["python"], "-I", "-S", "-B", "main.py"]


def _launch_bwrap(cfg: dict[str, Any], libc: Any, root: bool) -> NoReturn:
    if root:  # the per-run uid must reach the interpreter: only in our own mount namespace
        if libc.unshare(_CLONE_NEWNS) != 0:
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS) failed")
        _mount(libc, "none", "/", None, _MS_REC | _MS_PRIVATE)
        _expose(libc, python_dirs(cfg["python"]))
    main_fd = os.open(os.path.join(cfg["workdir"], "main.py"), os.O_RDONLY)
    os.set_inheritable(main_fd, True)
    _set_limits(cfg, root)
    if root:
        _drop_root(cfg["uid"])
    libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    active = ["bwrap", "userns", "mountns", "netns", "pidns", *(["uid"] if root else [])]
    env = dict(os.environ, HOME="/tmp", TMPDIR="/tmp", DATAGEN_SANDBOX=",".join(active))
    argv = bwrap_argv(cfg, main_fd, cfg["uid"] if root else _INSIDE_ID, env)
    os.execv(argv[0], argv)


def _launch_ns(cfg: dict[str, Any], libc: Any, root: bool) -> NoReturn:
    """Namespaces set up here (``ns``), or whatever is granted (``weak``)."""
    uid, gid = (cfg["uid"], cfg["uid"]) if root else (os.getuid(), os.getgid())
    active: list[str] = []
    home = cfg["workdir"]
    user = 0 if root else _CLONE_NEWUSER  # an unprivileged user namespace, when not root
    attempts = [user | _CLONE_NEWNS | _CLONE_NEWNET, user | _CLONE_NEWNET]
    flags = next((f for f in attempts if cfg["namespaces"] and libc.unshare(f) == 0), 0)
    if cfg["mode"] == "ns" and not flags & _CLONE_NEWNET:
        raise OSError("no network namespace: refusing to run without one")
    if flags & _CLONE_NEWUSER:  # keep our own ids inside; we hold every capability in the ns
        maps = [("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")]
        for name, text in maps:
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
    if flags & _CLONE_NEWNS:
        _mount(libc, "none", "/", None, _MS_REC | _MS_PRIVATE)
        if root:
            _expose(libc, python_dirs(cfg["python"]))
        with open(os.path.join(cfg["workdir"], "main.py"), "rb") as src:
            code = src.read()
        opts = f"size={cfg['disk_mb']}m,mode=700,uid={uid},gid={gid}"
        _mount(libc, "tmpfs", "/tmp", "tmpfs", _MS_NOSUID | _MS_NODEV, opts)
        with open("/tmp/main.py", "wb") as dst:
            dst.write(code)
        os.chown("/tmp/main.py", uid, gid)
        for d in ("/var/tmp", "/dev/shm", "/run/lock", "/var/lock"):
            if os.path.isdir(d) and not os.path.islink(d) and os.stat(d).st_mode & 0o002:
                _mount(libc, "/tmp", d, None, _MS_BIND)
        active.append("mountns")
        home = "/tmp"
    _set_limits(cfg, root)
    if root:
        _drop_root(uid)
        active.append("uid")
    libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)  # setuid binaries cannot regain root
    active.append("netns" if flags & _CLONE_NEWNET else "audit-hook")
    os.chdir(home)
    env = dict(os.environ, HOME=home, TMPDIR=home, DATAGEN_SANDBOX=",".join(active))
    guard = [] if flags & _CLONE_NEWNET else ["-c", _GUARD]
    os.execve(cfg["python"], [cfg["python"], "-I", "-S", "-B", *guard, "main.py"], env)


def launch(cfg: dict[str, Any]) -> NoReturn:
    libc = ctypes.CDLL(None, use_errno=True)
    root = os.geteuid() == 0
    if cfg["mode"] == "bwrap":
        _launch_bwrap(cfg, libc, root)
    _launch_ns(cfg, libc, root)


if __name__ == "__main__":
    try:
        launch(json.loads(sys.argv[1]))
    except Exception as e:
        hint = " (set DATAGEN_SANDBOX_PYTHON to a python every uid can run)"
        hint = hint if isinstance(e, PermissionError) else ""
        sys.stderr.write(f"{MARK} {type(e).__name__}: {e}{hint}\n")
        sys.stderr.flush()
        os._exit(LAUNCH_ERROR)
