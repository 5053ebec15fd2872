"""A batch-API run through the real CLI against the loopback batch server, killed mid-poll.

``datagen generate`` with an ``openai-batch`` (or ``anthropic-batch``) generator sends N distinct
prompts to ``generators.testing.batch_loopback`` started with ``--hold`` (batches stay in progress
until released). Once every provider batch of the run is submitted and being polled, the command
is killed with SIGKILL; the server is released and the same command runs again; then a third
time. Printed: requests, batches created, polls, requests submitted more than once (the goal is
0), and the wall time of each phase (submission includes start-up, reading prompts, keys and the
upload; the resumed run includes polling, reading the output files, the log and the writes).

    python benchmarks/batch_api.py                 # 100,000 requests, openai-batch
    python benchmarks/batch_api.py --provider anthropic-batch
    python benchmarks/batch_api.py --quick         # 2,000 requests, a smoke run
"""

from __future__ import annotations

import argparse
import math
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import orjson

LIMITS = {"openai-batch": 50_000, "anthropic-batch": 100_000}
KEYS = {"openai-batch": "OPENAI_API_KEY", "anthropic-batch": "ANTHROPIC_API_KEY"}


def _start_server() -> tuple[subprocess.Popen[bytes], int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "generators.testing.batch_loopback", "--port", "0", "--hold"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if select.select([proc.stdout], [], [], 0.5)[0]:
            line = proc.stdout.readline()
            if line.startswith(b"READY"):
                return proc, int(line.split()[1])
    proc.kill()
    raise SystemExit("the batch loopback server did not start")


def _call(port: int, path: str, method: str = "GET") -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    with urllib.request.urlopen(req, timeout=60) as r:
        return orjson.loads(r.read())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("-n", type=int, default=100_000)
    ap.add_argument("--provider", choices=sorted(LIMITS), default="openai-batch")
    ap.add_argument("--quick", action="store_true", help="2,000 requests")
    a = ap.parse_args()
    n = 2_000 if a.quick else a.n
    expected_batches = math.ceil(n / LIMITS[a.provider])
    proc, port = _start_server()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp)
            (d / "prompts.jsonl").write_bytes(b"".join(
                orjson.dumps({"prompt": f"question {i}"}) + b"\n" for i in range(n)))
            url = f"http://127.0.0.1:{port}" + ("/v1" if a.provider == "openai-batch" else "")
            (d / "gen.yaml").write_text(f"spec: {a.provider}:bench@{url}\n"
                                        "options: {poll_s: 0.2}\n")
            cmd = [sys.executable, "-m", "datagen.cli", "-q", "generate", "-g",
                   str(d / "gen.yaml"), "-i", str(d / "prompts.jsonl"), "--no-decontaminate"]
            env = dict(os.environ, DATAGEN_WORKSPACE=str(d / "ws"), **{KEYS[a.provider]: "x"})

            t0 = time.perf_counter()
            run1 = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE)
            while run1.poll() is None:
                s = _call(port, "/stats")
                if s["batches_created"] >= expected_batches and s["polls"] >= expected_batches:
                    break
                time.sleep(0.1)
            if run1.poll() is not None:
                raise SystemExit(f"run 1 ended before the kill: {run1.stderr.read()!r}")
            t_submit = time.perf_counter() - t0
            os.kill(run1.pid, signal.SIGKILL)
            run1.wait()
            at_kill = _call(port, "/stats")

            _call(port, "/release", "POST")
            t0 = time.perf_counter()
            run2 = subprocess.run(cmd, env=env, capture_output=True)
            t_resume = time.perf_counter() - t0
            if run2.returncode != 0:
                raise SystemExit(f"the resumed run failed: {run2.stderr.decode()[-500:]}")
            after = _call(port, "/stats")

            t0 = time.perf_counter()
            run3 = subprocess.run(cmd, env=env, capture_output=True)
            t_third = time.perf_counter() - t0
            final = _call(port, "/stats")
    finally:
        proc.kill()
        proc.wait()

    submitted = final["submitted"]
    twice = sum(1 for c in submitted.values() if c > 1)
    print(f"{a.provider}: {n:,} requests through `datagen generate`, killed mid-poll")
    print("| phase | wall | batches created (total) | polls (total) |")
    print("| --- | --- | --- | --- |")
    print(f"| submit, then SIGKILL while polling | {t_submit:.1f} s | "
          f"{at_kill['batches_created']} | {at_kill['polls']} |")
    print(f"| re-run: resume polling, collect, write | {t_resume:.1f} s | "
          f"{after['batches_created']} | {after['polls']} |")
    print(f"| third run (all in the log) | {t_third:.1f} s | "
          f"{final['batches_created']} | {final['polls']} |")
    print(f"requests submitted: {sum(submitted.values()):,} for {n:,} prompts; "
          f"re-submitted: {twice} (goal 0); third run: "
          f"{'sent nothing' if f'{n} reused, 0 sent'.encode() in run3.stderr else 'SENT'}")


if __name__ == "__main__":
    main()
