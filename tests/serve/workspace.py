"""A small workspace for the web app's tests, built in seconds from the fake backend: a finished
benchmark (leaderboard rows with PGR), two generators answering the same math seeds (one row
rejected, one whose text holds ``<script>``), and an attribute-variants run with 12 pairs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import orjson

from datagen import api
from datagen_core.records import GeneratorSpec, GenRequest
from datagen_core.workspace import Workspace
from generators.backends.fake import FakeBackend
from metrics.store import Store
from tests.metrics.planting import plant_benchmark

XSS = "<script>document.body.dataset.xss = 'ran'</script>"
NO_ANSWER = "I would rather not say."
SEEDS = [
    {"id": "s0", "instruction": "What is 2 + 2?"},
    {"id": "s1", "instruction": f"Add 3 and 4. {XSS}"},
    {"id": "s2", "instruction": "What is 10 - 3?"},
    {"id": "s3", "instruction": "What is 6 * 7?"},
]
NO_CURATION = {"decontaminate": False}


@dataclass
class Built:
    root: Path
    alpha: str  # run ids
    beta: str
    pairs: str
    leader: str  # the overall leaderboard's first generator


def _answers(name: str):
    def respond(request: GenRequest) -> str:
        seed = request.meta["seed"]
        if seed["id"] == "s2" and name == "alpha":
            return NO_ANSWER  # rejected: no final answer
        if seed["id"] == "s1":
            return f"{name} says 3 + 4 = 7 {XSS}\n#### 7"
        return f"{name} works it out.\n#### {len(seed['instruction'])}"
    return respond


def pairs_responder(request: GenRequest) -> str:
    m = request.meta
    if "order" in m:  # the judge prefers the intended winner in both orders
        return ("Score A: 5\nScore B: 2\nBetter: A" if m["order"] == "ab" else
                "Score A: 2\nScore B: 5\nBetter: B")
    return (f"Original: When did it start for {m['row_id']}?\n"
            f"Enhanced: When exactly did the {m['attribute']} problem start for {m['row_id']}?\n"
            f"Corrupted: Things, stuff, {m['attribute']}, when?")


def generate(root: Path, label: str, responder, source: str | None = None, **kw) -> str:
    spec = GeneratorSpec.parse(f"fake:{label}", limits={"max_retries": 0})
    return api.generate(spec, source, backend=FakeBackend(spec, responder=responder),
                        progress=False, workspace=root, curation=NO_CURATION, **kw).run_id


def build(root: Path) -> Built:
    ws = Workspace(root).ensure()
    seeds = root / "seeds.jsonl"
    seeds.write_bytes(b"".join(orjson.dumps(s) + b"\n" for s in SEEDS))
    plant_benchmark(Store(ws.db_path), n_items=40)
    runs = {name: generate(root, name, _answers(name), str(seeds),
                           method="response-generation", domain="math")
            for name in ("alpha", "beta")}
    pairs = generate(root, "judge", pairs_responder, n=2, method="attribute-variants",
                     method_args={"attributes": ["clarity", "focus"]})
    leader = api.leaderboard("overall", workspace=root)[0]["generator"]
    return Built(root, runs["alpha"], runs["beta"], pairs, leader)
