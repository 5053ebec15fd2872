"""Engine throughput against a loopback OpenAI-compatible server: how close is datagen to the wire?

For each concurrency C, N distinct chat requests go to one loopback server (a separate process,
so server and client each get a core) from four clients, measured in the same run:

1. ``bare aiohttp``   - a ClientSession and C workers posting the JSON bodies the engine sends
                        (serialised before the clock starts) and parsing the replies: the ceiling.
2. ``openai SDK``     - ``openai.AsyncOpenAI(base_url=..., api_key="x")`` with default settings,
                        ``client.chat.completions.create(...)`` from C workers.
3. ``datagen engine`` - ``Engine(GeneratorSpec.parse("openai:bench@URL", limits={"concurrency": C}),
                        log_path=<fresh dir>/responses.jsonl, progress=False)`` with request keys,
                        the log lookup and the per-response flushed log all on. The clock covers
                        ``generate()`` (keys, log, sending, results); the GenRequest list is built
                        before the clock starts (its cost is printed separately).
4. ``engine re-run (all cached)`` - a new Engine over the same log: every answer comes from the
                        log and nothing is sent (checked against the server's request counter).

The bare loop and the engine run back to back, in alternating order, and the table shows the
median of ``--repeats`` rounds with the range, so load from other processes shows as spread.
Each row also gives client and server CPU (100% = one core): a server near 100% would mean the
server, not the client, sets the pace (the script warns).

    python benchmarks/engine_throughput.py            # N=5000, C=64 and 256, 50 ms, 3 repeats
    python benchmarks/engine_throughput.py --quick    # smoke run, a few seconds
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from datagen_core.records import GeneratorSpec, GenRequest, Message  # noqa: E402
from generators.engine import Engine  # noqa: E402

MODEL = "bench"
TARGET = 0.80
SERVER_BUSY = 0.90  # of one core: above this the server, not the client, may set the pace
CLIENTS = ("bare aiohttp", "openai SDK", "datagen engine", "engine re-run (all cached)")
_TICK = os.sysconf("SC_CLK_TCK")


# -- the server ---------------------------------------------------------------------------------
class Server:
    """The loopback server in its own process, started with ``--port 0``."""

    def __init__(self, latency: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "generators.testing.loopback", "--port", "0",
             "--latency", str(latency)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().split()
        if len(line) != 2 or line[0] != "READY":
            self.proc.kill()
            raise RuntimeError(f"loopback server did not start: {line!r}")
        self.port = int(line[1])
        self.base_url = f"http://127.0.0.1:{self.port}/v1"

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime

    async def total(self) -> int:
        async with aiohttp.ClientSession() as s, s.get(
            f"http://127.0.0.1:{self.port}/stats"
        ) as r:
            return int((await r.json())["total"])

    async def reset(self) -> None:
        async with aiohttp.ClientSession() as s, s.post(
            f"http://127.0.0.1:{self.port}/reset"
        ) as r:
            await r.read()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -- the workload -------------------------------------------------------------------------------
def prompts(n: int, tag: str) -> list[str]:
    """N distinct prompts; ``tag`` makes every measurement's set unique."""
    return [f"[{tag}] write one sentence about item {i} of the benchmark" for i in range(n)]


def bodies(texts: list[str]) -> list[bytes]:
    """The exact JSON the engine's OpenAI backend sends for these prompts (default sampling)."""
    return [
        orjson.dumps({
            "model": MODEL, "messages": [{"role": "user", "content": t}],
            "temperature": 0.7, "top_p": 1.0, "max_tokens": 512,
        })
        for t in texts
    ]


async def pool(concurrency: int, n: int, one: Callable[[int], Awaitable[None]]) -> None:
    """C workers pulling indices 0..n-1 from a shared iterator (the engine's own scheme)."""
    it = iter(range(n))

    async def worker() -> None:
        for i in it:
            await one(i)

    async with asyncio.TaskGroup() as tg:
        for _ in range(min(concurrency, n)):
            tg.create_task(worker())


async def run_aiohttp(base_url: str, concurrency: int, texts: list[str]) -> int:
    data = bodies(texts)
    url = f"{base_url}/chat/completions"
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    ok = 0
    async with aiohttp.ClientSession(
        headers=headers, connector=aiohttp.TCPConnector(limit=concurrency)
    ) as session:

        async def one(i: int) -> None:
            nonlocal ok
            async with session.post(url, data=data[i]) as r:
                payload = orjson.loads(await r.read())
            if r.status == 200 and payload["choices"][0]["message"]["content"]:
                ok += 1

        await pool(concurrency, len(data), one)
    return ok


async def run_openai(base_url: str, concurrency: int, texts: list[str]) -> int:
    import openai

    ok = 0
    client = openai.AsyncOpenAI(base_url=base_url, api_key="x")
    try:

        async def one(i: int) -> None:
            nonlocal ok
            r = await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": texts[i]}],
                temperature=0.7, top_p=1.0, max_tokens=512,
            )
            if r.choices[0].message.content:
                ok += 1

        await pool(concurrency, len(texts), one)
    finally:
        await client.close()
    return ok


def gen_requests(texts: list[str]) -> list[GenRequest]:
    return [GenRequest(messages=[Message(role="user", content=t)]) for t in texts]


def engine_for(base_url: str, concurrency: int, log_path: Path) -> Engine:
    spec = GeneratorSpec.parse(f"openai:{MODEL}@{base_url}", limits={"concurrency": concurrency})
    return Engine(spec, log_path=log_path, progress=False)


async def run_engine(engine: Engine, requests: list[GenRequest]) -> int:
    async with engine:
        out = await engine.generate(requests)
    return sum(r.ok for r in out)


# -- measuring ----------------------------------------------------------------------------------
@dataclass
class Row:
    concurrency: int
    client: str
    rps: float
    seconds: float
    client_cpu: float
    server_cpu: float
    sent: int


async def measure(server: Server, concurrency: int, client: str, n: int,
                  work: Callable[[], Awaitable[int]]) -> Row:
    await server.reset()
    gc.collect()
    s0, c0, t0 = server.cpu_seconds(), time.process_time(), time.perf_counter()
    ok = await work()
    t1, c1, s1 = time.perf_counter(), time.process_time(), server.cpu_seconds()
    sent = await server.total()
    if ok != n:
        raise RuntimeError(f"{client} at C={concurrency}: {ok}/{n} answers")
    wall = t1 - t0
    return Row(concurrency, client, n / wall, wall, (c1 - c0) / wall, (s1 - s0) / wall, sent)


async def one_round(server: Server, concurrency: int, n: int, tag: str, engine_first: bool,
                    build_times: list[float]) -> list[Row]:
    """All four clients once. The bare loop and the engine run back to back (their order
    alternating between repeats) so that their ratio sees the same machine load."""
    url = server.base_url

    async def bare() -> Row:
        return await measure(server, concurrency, CLIENTS[0], n,
                             lambda: run_aiohttp(url, concurrency, prompts(n, f"{tag}-a")))

    rows = [] if engine_first else [await bare()]
    with tempfile.TemporaryDirectory(prefix="datagen-bench-") as tmp:
        log_path = Path(tmp) / "run" / "responses.jsonl"
        b0 = time.perf_counter()
        requests = gen_requests(prompts(n, f"{tag}-e"))  # built before the clock starts
        build_times.append(time.perf_counter() - b0)
        first = engine_for(url, concurrency, log_path)
        rows.append(await measure(server, concurrency, CLIENTS[2], n,
                                  lambda: run_engine(first, requests)))
        if first.stats.sent != n:
            raise RuntimeError(f"engine sent {first.stats.sent}, expected {n}")
        again = engine_for(url, concurrency, log_path)
        rows.append(await measure(server, concurrency, CLIENTS[3], n,
                                  lambda: run_engine(again, requests)))
        if again.stats.sent or again.stats.reused != n or rows[-1].sent:
            raise RuntimeError(
                f"cached re-run sent {again.stats.sent} (server saw {rows[-1].sent}), "
                f"reused {again.stats.reused}"
            )
    if engine_first:
        rows.append(await bare())
    rows.append(await measure(server, concurrency, CLIENTS[1], n,
                              lambda: run_openai(url, concurrency, prompts(n, f"{tag}-o"))))
    return rows


def report(all_rows: list[Row], concurrencies: list[int], repeats: int) -> None:
    def fmt_range(xs: list[float], f: str) -> str:
        if len(xs) == 1:
            return format(xs[0], f)
        return f"{format(statistics.median(xs), f)} ({format(min(xs), f)}-{format(max(xs), f)})"

    head = f"{'C':>4}  {'client':<27} {'requests/s':>24}  {'x bare aiohttp':>20}  " \
           f"{'client CPU':>10}  {'server CPU':>10}"
    print()
    if repeats > 1:
        print(f"median (min-max) over {repeats} repeats; ratios are per repeat")
    print(head)
    print("-" * len(head))
    verdicts = []
    for c in concurrencies:
        rows = [r for r in all_rows if r.concurrency == c]
        base = [r.rps for r in rows if r.client == CLIENTS[0]]
        for client in CLIENTS:
            mine = [r for r in rows if r.client == client]
            rps = [r.rps for r in mine]
            ratio = [r / b for r, b in zip(rps, base)]
            ccpu = statistics.median(r.client_cpu for r in mine)
            scpu = statistics.median(r.server_cpu for r in mine)
            print(f"{c:>4}  {client:<27} {fmt_range(rps, ',.0f'):>24}  "
                  f"{fmt_range(ratio, '.2f'):>20}  {ccpu:>9.0%}  {scpu:>9.0%}")
            if client == CLIENTS[2]:
                verdicts.append((c, ratio))
        print()
    busy = [r for r in all_rows if r.server_cpu > SERVER_BUSY]
    if busy:
        worst = max(busy, key=lambda r: r.server_cpu)
        print(f"WARNING: the server used {worst.server_cpu:.0%} of a core during "
              f"'{worst.client}' at C={worst.concurrency}: it may be the bottleneck there")
    else:
        top = max(r.server_cpu for r in all_rows)
        print(f"server CPU peaked at {top:.0%} of a core: the server is not the bottleneck")
    for c, ratio in verdicts:
        med = statistics.median(ratio)
        ok = "reaches" if med >= TARGET else "is BELOW"
        print(f"C={c}: datagen engine {ok} the {TARGET:.0%} target "
              f"({med:.0%} of bare aiohttp, median of {len(ratio)})")


async def main_async(a: argparse.Namespace) -> int:
    server = Server(a.latency)
    try:
        print(f"loopback server pid {server.proc.pid} on port {server.port}, "
              f"latency {a.latency * 1000:.0f} ms; N={a.n}, C={a.concurrency}, "
              f"repeats={a.repeats}; python {sys.version.split()[0]}, "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}", flush=True)
        # Warm-up: imports, first connections, the server's own caches.
        warm = min(a.n, 200)
        await run_aiohttp(server.base_url, 32, prompts(warm, "warm-a"))
        await run_openai(server.base_url, 32, prompts(warm, "warm-o"))
        rows: list[Row] = []
        build_times: list[float] = []
        for rep in range(a.repeats):
            for c in a.concurrency:
                got = await one_round(server, c, a.n, f"r{rep}c{c}", rep % 2 == 1, build_times)
                for r in got:
                    print(f"  repeat {rep + 1} C={c:<4} {r.client:<27} {r.rps:>8,.0f} req/s "
                          f"{r.seconds:6.2f}s  client CPU {r.client_cpu:4.0%}  "
                          f"server CPU {r.server_cpu:4.0%}", flush=True)
                rows.extend(got)
        report(rows, a.concurrency, a.repeats)
        print(f"(load average at the end {os.getloadavg()[0]:.2f}; "
              "other work on the machine shows up as spread between repeats)")
        print(f"(building {a.n} GenRequests, outside the clock: "
              f"{statistics.median(build_times) * 1000:.0f} ms)")
        return 0
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--n", type=int, default=5000, help="requests per measurement")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--latency", type=float, default=0.05, help="server latency, seconds")
    ap.add_argument("--repeats", type=int, default=3,
                    help="rounds of all clients; the table shows medians")
    ap.add_argument("--quick", action="store_true", help="smoke run: N=300, C=16 and 64")
    a = ap.parse_args(argv)
    if a.quick:
        a.n, a.concurrency, a.repeats = 300, [16, 64], 1
    return asyncio.run(main_async(a))


if __name__ == "__main__":
    sys.exit(main())
