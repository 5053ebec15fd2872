"""`datagen generate` end to end at scale: wall time against a bare aiohttp loop, and peak RSS.

For each (N, concurrency) the same loopback OpenAI-compatible server (its own process, fixed
latency) answers, in the same run and back to back:

1. ``bare loop``      - the ceiling: an aiohttp ClientSession and C workers posting the JSON the
                        engine sends (built before the clock starts) and parsing the replies, in
                        this process (what the issue's figures compare with).
2. ``bare program``   - the same loop as a program in a subprocess, end to end like the CLI:
                        interpreter start-up, reading the prompts file, building the bodies,
                        writing every answer to a JSONL file (no resume, no curation, no store).
3. ``datagen``        - the real CLI in a subprocess, ``python -m datagen.cli --quiet generate
                        -g openai:bench@URL -i prompts.jsonl --concurrency C`` on a fresh
                        workspace: start-up, reading the prompts, generation, curation and every
                        output (data.parquet, data.jsonl, DuckDB rows) are inside the clock. Its
                        peak RSS is that of the CLI and its writer process together, taken by a
                        small launcher that forks it (see ``LAUNCHER``); wall time runs from that
                        fork to its exit.

The run is then checked: the server saw exactly N requests, and data.parquet holds N rows.
Decontamination is off by default (``--decontaminate`` turns it on): it checks every prompt
against the eval sets, a cost benchmarked on its own in ``benchmarks/curation.py``.

    python benchmarks/generate_scale.py                          # N=3000, C=256
    python benchmarks/generate_scale.py --n 100000 1000000 --concurrency 64 256
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
for _p in (ROOT, ROOT / "benchmarks"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from engine_throughput import Server, run_aiohttp  # noqa: E402

RATIO_GOAL = {3000: 0.8}  # else 0.9 (the goals)
RSS_GOAL_MB = 600


@dataclass
class Row:
    n: int
    concurrency: int
    bare_s: float
    program_s: float
    datagen_s: float
    rss_mb: float

    @property
    def ratio(self) -> float:
        return self.bare_s / self.datagen_s

    @property
    def program_ratio(self) -> float:
        return self.program_s / self.datagen_s


BARE_PROGRAM = r"""
import asyncio, sys, aiohttp, orjson
url, src, out, c = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
async def main():
    with open(src, "rb") as f:
        prompts = [orjson.loads(line)["prompt"] for line in f]
    it = iter(range(len(prompts)))
    answers = [None] * len(prompts)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=c)) as s:
        async def worker():
            for i in it:
                body = orjson.dumps({"model": "bench", "messages": [{"role": "user",
                    "content": prompts[i]}], "temperature": 0.7, "top_p": 1.0, "max_tokens": 512})
                async with s.post(url + "/chat/completions", data=body,
                                  headers={"Content-Type": "application/json"}) as r:
                    answers[i] = orjson.loads(await r.read())["choices"][0]["message"]["content"]
        await asyncio.gather(*(worker() for _ in range(c)))
    with open(out, "wb") as f:
        for p, a in zip(prompts, answers):
            f.write(orjson.dumps({"prompt": p, "answer": a}) + b"\n")
asyncio.run(main())
"""


def run_program(url: str, concurrency: int, src: Path, out: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", BARE_PROGRAM, url, str(src), str(out),
                    str(concurrency)], check=True)
    return time.perf_counter() - t0


def prompts(n: int, tag: str) -> list[str]:
    return [f"[{tag}] write one sentence about item {i} of the benchmark" for i in range(n)]


#: starts the CLI and reports its peak RSS. Not ``os.wait4`` on a child of this process: Linux
#: charges a child, at exec, with the memory of the process it was forked (or vforked) from, so
#: at 300k prompts this benchmark's own 1.3 GB was reported as datagen's. A fresh interpreter
#: forks the CLI instead: what it is charged with is this launcher's few MB. A big run writes
#: in a process of its own, so the launcher also sums the RSS of the CLI and its children every
#: 0.1 s; the peak reported is the larger of that sum and the CLI's own ``ru_maxrss``.
LAUNCHER = r"""
import os, sys, threading, time

def tree_kb(pid):
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                total += next(int(x.split()[1]) for x in f if x.startswith("VmRSS:"))
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except (OSError, StopIteration):
            pass
    return total

t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
peak, done = [0], threading.Event()

def sample():
    while not done.wait(0.1):
        peak[0] = max(peak[0], tree_kb(pid))

threading.Thread(target=sample, daemon=True).start()
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - t0
done.set()
with open(sys.argv[1], "w") as f:
    f.write(f"{max(usage.ru_maxrss, peak[0])} {wall}")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_datagen(url: str, concurrency: int, src: Path, ws: Path, extra: list[str]
                ) -> tuple[float, float, str]:
    """(wall seconds, peak RSS in MB, stderr) of one `datagen generate` in a subprocess."""
    env = {**os.environ, "DATAGEN_WORKSPACE": str(ws)}
    cmd = [sys.executable, "-m", "datagen.cli", "--quiet", "generate", "-g",
           f"openai:bench@{url}", "-i", str(src), "--concurrency", str(concurrency), *extra]
    report = ws.parent / f"{ws.name}.rusage"
    proc = subprocess.run([sys.executable, "-c", LAUNCHER, str(report), *cmd], cwd=ROOT,
                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = proc.stderr.decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"datagen generate failed ({proc.returncode}): {err[-2000:]}")
    maxrss_kb, wall = report.read_text().split()
    return float(wall), int(maxrss_kb) / 1024, err


async def one(server: Server, n: int, concurrency: int, tag: str, tmp: Path, extra: list[str],
              datagen_first: bool, program: bool) -> Row:
    import pyarrow.parquet as pq

    src, psrc = tmp / f"{tag}.jsonl", tmp / f"{tag}-p.jsonl"
    for path, t in ((src, "d"), (psrc, "p")):
        with open(path, "wb") as f:
            for p in prompts(n, f"{tag}-{t}"):
                f.write(orjson.dumps({"prompt": p}) + b"\n")
    bare_texts = prompts(n, f"{tag}-a")

    async def bare() -> float:
        await server.reset()
        t0 = time.perf_counter()
        ok = await run_aiohttp(server.base_url, concurrency, bare_texts)
        wall = time.perf_counter() - t0
        if ok != n:
            raise RuntimeError(f"bare loop: {ok}/{n} answers")
        return wall

    bare_s = None if datagen_first else await bare()
    await server.reset()
    ws = tmp / f"ws-{tag}"
    dg_s, rss, _ = await asyncio.to_thread(run_datagen, server.base_url, concurrency, src, ws,
                                           extra)
    sent = await server.total()
    data = list(ws.glob("runs/*/data.parquet"))
    rows = pq.ParquetFile(data[0]).metadata.num_rows if data else 0
    if sent != n or rows != n:
        raise RuntimeError(f"datagen: server saw {sent} requests, data.parquet has {rows} rows, "
                           f"expected {n}")
    if bare_s is None:
        bare_s = await bare()
    program_s = float("nan")
    if program:
        await server.reset()
        program_s = await asyncio.to_thread(run_program, server.base_url, concurrency, psrc,
                                            tmp / f"{tag}-answers.jsonl")
        if await server.total() != n:
            raise RuntimeError("bare program: the server saw the wrong number of requests")
    for path in (src, psrc, tmp / f"{tag}-answers.jsonl"):
        path.unlink(missing_ok=True)
    return Row(n, concurrency, bare_s, program_s, dg_s, rss)


def table(rows: list[Row]) -> None:
    print()
    print("| requests | concurrency | datagen wall | bare loop | ratio | peak RSS "
          "| bare program | ratio to program |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    keys = sorted({(r.n, r.concurrency) for r in rows})
    for n, c in keys:
        mine = [r for r in rows if (r.n, r.concurrency) == (n, c)]
        ratio = statistics.median(r.ratio for r in mine)
        spread = (f" ({min(r.ratio for r in mine):.2f}-{max(r.ratio for r in mine):.2f})"
                  if len(mine) > 1 else "")
        print(f"| {n:,} | {c} | {statistics.median(r.datagen_s for r in mine):.1f} s | "
              f"{statistics.median(r.bare_s for r in mine):.1f} s | {ratio:.2f}{spread} | "
              f"{max(r.rss_mb for r in mine):,.0f} MB | "
              f"{statistics.median(r.program_s for r in mine):.1f} s | "
              f"{statistics.median(r.program_ratio for r in mine):.2f} |")
    print()
    for n, c in keys:
        mine = [r for r in rows if (r.n, r.concurrency) == (n, c)]
        goal = RATIO_GOAL.get(n, 0.9)
        ratio = statistics.median(r.ratio for r in mine)
        rss = max(r.rss_mb for r in mine)
        print(f"N={n:,} C={c}: ratio {ratio:.2f} ({'meets' if ratio >= goal else 'BELOW'} the "
              f"{goal} goal), peak RSS {rss:,.0f} MB ({'under' if rss < RSS_GOAL_MB else 'OVER'}"
              f" {RSS_GOAL_MB} MB)")


async def main_async(a: argparse.Namespace) -> int:
    server = Server(a.latency)
    extra = [] if a.decontaminate else ["--no-decontaminate"]
    try:
        print(f"loopback server pid {server.proc.pid}, latency {a.latency * 1000:.0f} ms; "
              f"N={a.n}, C={a.concurrency}, repeats={a.repeats}; {os.cpu_count()} CPUs, "
              f"load average {os.getloadavg()[0]:.2f}", flush=True)
        await run_aiohttp(server.base_url, 32, prompts(200, "warm"))
        rows: list[Row] = []
        with tempfile.TemporaryDirectory(prefix="datagen-scale-") as tmp:
            for rep in range(a.repeats):
                for n in a.n:
                    for c in a.concurrency:
                        r = await one(server, n, c, f"r{rep}n{n}c{c}", Path(tmp), extra,
                                      datagen_first=rep % 2 == 1, program=a.program)
                        print(f"  N={n:,} C={c}: datagen {r.datagen_s:.2f} s, bare loop "
                              f"{r.bare_s:.2f} s, ratio {r.ratio:.2f}, bare program "
                              f"{r.program_s:.2f} s, peak RSS "
                              f"{r.rss_mb:,.0f} MB (load {os.getloadavg()[0]:.1f})", flush=True)
                        rows.append(r)
        table(rows)
        print(f"(load average at the end {os.getloadavg()[0]:.2f}; compare ratios within one "
              "run: other work on the machine moves both sides)")
        return 0
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--n", type=int, nargs="+", default=[3000], help="requests per run")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[256])
    ap.add_argument("--latency", type=float, default=0.05, help="server latency, seconds")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--no-program", dest="program", action="store_false",
                    help="skip the bare program (saves a third of the time at large N)")
    ap.add_argument("--decontaminate", action="store_true",
                    help="keep datagen's default decontamination on")
    return asyncio.run(main_async(ap.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
