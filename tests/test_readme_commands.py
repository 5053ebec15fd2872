"""Every ``datagen`` command in the README's bash blocks runs, or is skipped for a stated reason.

The README is parsed (backslash continuations joined, comments dropped, ``&&``/``;``/``|`` chains
split); each ``datagen`` command found must be in ``RUN`` or in ``SKIP`` below, so a new README
command fails this test until it is classified. Commands in ``RUN`` are run as written, through
the installed ``datagen`` console script, in a temporary folder and workspace, offline
(``HF_HUB_OFFLINE=1``, no real API key): placeholders (``3f2a``, ``RUN``, ``BASE_EVAL``...) are
replaced by ids of runs and evaluations this module creates, and commands that name a hosted
API (OpenAI, Anthropic, an OpenAI-compatible server) talk to the loopback server
(``generators.testing.loopback``) through ``OPENAI_BASE_URL`` / ``ANTHROPIC_BASE_URL``.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PROGRAMS = {"datagen", ".venv/bin/datagen"}
CHAIN = {"&&", "||", ";", "|", "&"}


def readme_commands(text: str | None = None) -> list[str]:
    """The README's ``datagen`` commands, each as a normalised shell string, in README order."""
    text = README.read_text() if text is None else text
    found: list[str] = []
    for block in re.findall(r"^```(?:bash|sh|shell|console)\n(.*?)^```", text, re.M | re.S):
        for line in re.sub(r"\\\n", " ", block).splitlines():
            lex = shlex.shlex(line, posix=True, punctuation_chars=True)
            lex.whitespace_split = True
            tokens = list(lex)
            segment: list[str] = []
            for tok in [*tokens, ";"]:
                if tok not in CHAIN:
                    segment.append(tok)
                    continue
                argv = _datagen_argv(segment)
                if argv is not None:
                    found.append(shlex.join(argv))
                segment = []
    return found


def _datagen_argv(segment: list[str]) -> list[str] | None:
    if not segment:
        return None
    if segment[0] in PROGRAMS:
        return ["datagen", *segment[1:]]
    python = re.fullmatch(r"(\.venv/bin/)?python3?", segment[0])
    if python and segment[1:3] in (["-m", "datagen"], ["-m", "datagen.cli"]):
        return ["datagen", *segment[3:]]
    return None


@dataclass(frozen=True)
class Run:
    why: str                     # why this runs offline, as a note for the reader
    workspace: str = "gen"       # "gen": generated runs; "bench": a planted finished benchmark
    loopback: bool = False       # hosted APIs point at the loopback server
    subs: dict[str, str] = field(default_factory=dict)  # README token -> key of `World.ids`
    expect: str = ""             # text the output must contain


# Commands run as written (after the substitutions), in README order.
RUN: dict[str, Run] = {
    "datagen generate -g openai:meta-llama/Llama-3.1-8B-Instruct@http://127.0.0.1:8000/v1 "
    "-i prompts.jsonl --column question -n 1000 --temperature 0.2 --concurrency 64": Run(
        "the loopback server stands in for the vLLM server", loopback=True,
        subs={"openai:meta-llama/Llama-3.1-8B-Instruct@http://127.0.0.1:8000/v1": "vllm_spec"},
        expect="rows kept"),
    "datagen generate -g anthropic:claude-3-5-haiku-latest -i seeds.parquet --system "
    "'Be concise.'": Run("Anthropic API answered by the loopback server", loopback=True,
                         expect="rows kept"),
    "datagen generate -g configs/generators/gpt-4o-mini.yaml -i prompts.jsonl": Run(
        "OpenAI API answered by the loopback server", loopback=True, expect="rows kept"),
    "datagen runs": Run("lists the module's runs", expect="fake"),
    "datagen runs show 3f2a": Run("a real run id", subs={"3f2a": "run"}, expect="finished"),
    "datagen export 3f2a -o data.parquet": Run("a real run id", subs={"3f2a": "run"},
                                               expect="data.parquet"),
    "datagen generate -g fake -m quality-enhancement -d general": Run(
        "the fake backend and built-in seeds", expect="rows kept"),
    "datagen generate -g openai:gpt-4o-mini -m multi-attribute-edit -a k=4 -a rounds=3": Run(
        "OpenAI API answered by the loopback server", loopback=True, expect="rows kept"),
    "datagen pairs export RUN --format trl -o pairs.jsonl": Run(
        "a preference run made with a scripted fake backend", subs={"RUN": "pairs_run"},
        expect="pairs.jsonl"),
    "datagen metrics RUN": Run(
        "the scripted preference run: stats and the pairs family", subs={"RUN": "pairs_run"},
        expect="margin_median"),
    "datagen pairs route RUN --budget 0.2 --format csv -o to-label.csv": Run(
        "the scripted preference run", subs={"RUN": "pairs_run"}, expect="to-label.csv"),
    "datagen pairs import-labels RUN to-label.csv --annotator alice": Run(
        "reads back the file route wrote, still unlabelled", subs={"RUN": "pairs_run"},
        expect="rows without a label skipped"),
    "datagen pairs export RUN --format jsonl -o mixed.jsonl": Run(
        "the scripted preference run", subs={"RUN": "pairs_run"}, expect="mixed.jsonl"),
    "datagen pairs export RUN --format trl -o judge-only.jsonl --ignore-labels": Run(
        "the scripted preference run", subs={"RUN": "pairs_run"}, expect="judge-only.jsonl"),
    "datagen generate -g fake -m persona-prompts -d general -n 16": Run(
        "the fake backend and the shipped personas", expect="rows kept"),
    "datagen generate -g fake -m template-expansion -n 60 -a sample=true": Run(
        "the fake backend and the shipped templates and issues", expect="60/60 rows kept"),
    "datagen select 3f2a -k 4 -m random": Run(
        "a real run id; random selection embeds nothing", subs={"3f2a": "run"},
        expect="4 of"),
    "datagen metrics RUN --issue-bias openai:gpt-4o-mini": Run(
        "a template-expansion run; the stance judge is answered by the loopback server",
        loopback=True, subs={"RUN": "issue_run"}, expect="stance per issue"),
    "datagen metrics RUN --judge openai:gpt-4o-mini": Run(
        "the judge is answered by the loopback server (echoes: scores are missing)",
        loopback=True, subs={"RUN": "run"}, expect="judge"),
    "datagen pgr RUN --base BASE_EVAL --reference REF_EVAL": Run(
        "a planted benchmark: a run, its student's evaluation, base and reference evaluations",
        workspace="bench", subs={"RUN": "bench_run", "BASE_EVAL": "base", "REF_EVAL": "ref"},
        expect="domain mean"),
    "datagen rank": Run("a planted benchmark with PGR rows", workspace="bench",
                        expect="gpt-4o-mini"),
    "datagen report -o report.html": Run("a planted benchmark with PGR rows", workspace="bench",
                                         expect="report.html"),
    "datagen bench configs/bench/agorabench-mini.yaml --dry-run": Run(
        "a dry run only plans (no request is sent); the eval sets from $DATAGEN_EVAL_DIR",
        expect="students to train"),
}

# Commands not run here, with the reason.
ECHO_IS_NOT_DATA = (
    "a hosted API; the loopback server's echoes are no valid instance for this method, and a run "
    "that keeps no row exits 1; scripted replies cover it in ")
SERVE_BLOCKS = (
    "serves until Ctrl-C; tests/serve runs `datagen serve` on a free port over a workspace it "
    "builds and drives every page with headless Chromium")
SKIP: dict[str, str] = {
    "datagen generate -g hf:smollm2 -i prompts.jsonl -n 64 --ray-address local --ray-replicas 2":
        "starts a local Ray and loads SmolLM2 in two replicas (minutes on 2 cores): the same "
        "path runs in tests/test_ray_data.py (fake backend; a tiny hf model in the slow test)",
    "datagen generate -g configs/generators/vllm-ray.yaml -i prompts.jsonl --ray-address auto "
    "--ray-replicas 4":
        "needs a Ray cluster with GPUs and vLLM: its processor config and the driver side run "
        "in tests/test_ray_data.py with Ray Data's processor replaced",
    "datagen pairs agreement RUN":
        "needs labels people gave; the round trip with a scripted person (route, label, "
        "import, agreement, export) is tests/test_pairs_routing.py",
    "datagen bench configs/bench/quickstart.yaml":
        "the quickstart trains and evaluates SmolLM2 students (minutes): run by the slow test "
        "tests/test_end_to_end.py::"
        "test_quickstart_bench_ranks_the_generators_and_a_rerun_reuses_every_step",
    "datagen generate -g hf:smollm2 -m verified-pairs -d arithmetic -n 16 -a samples=4":
        "64 SmolLM2 answers on a CPU (a minute): the method runs with scripted answers in "
        "tests/generators/test_verified_pairs.py and with SmolLM2 in the pairs quickstart's slow "
        "test",
    "datagen bench configs/bench/pairs-quickstart.yaml":
        "the preference quickstart trains and evaluates three SmolLM2 DPO students (minutes): "
        "run by the slow test tests/test_end_to_end.py::"
        "test_pairs_quickstart_ranks_the_verified_pair_source_above_its_unverified_control",
    "datagen bench configs/bench/agorabench-mini.yaml":
        "trains 21 students and evaluates them on six tasks (well over an hour on 2 cores): run by "
        "tests/test_agorabench_mini.py (pytest -m mini)",
    "datagen bench configs/bench/agorabench.yaml --dry-run":
        "decontamination must read the suite's win-rate set (AlpacaEval) from the Hugging Face "
        "Hub; tests/test_bench.py plans the same suite with the shipped win-rate set",
    "datagen bench configs/bench/agorabench.yaml --ray-address http://head:8265":
        "needs a Ray cluster and the hosted generators of the AgoraBench suite",
    "datagen generate -g openai:gpt-4o-mini -i hf://openai/gsm8k/main:train -c question "
    "--rpm 500": "reads a dataset from the Hugging Face Hub (network)",
    "datagen generate -g hf:smollm2 -m response-generation -d code -i "
    "hf://google-research-datasets/mbpp:train --columns instruction=text,tests=test_list":
        "reads a dataset from the Hugging Face Hub (network)",
    "datagen generate -g openai:gpt-4o-mini -m instance-generation -d math -n 1000 -a k=3 -a "
    "accepted_share=0.3": ECHO_IS_NOT_DATA + "tests/generators/test_methods.py",
    "datagen generate -g openai:gpt-4o -m attribute-variants -a "
    "judge=anthropic:claude-3-5-sonnet-latest":
        ECHO_IS_NOT_DATA + "tests/generators/test_attribute_variants.py",
    "datagen generate -g openai:gpt-4o-mini -m preference-pairs -i prompts.jsonl -a "
    "'pool=[anthropic:claude-3-5-haiku-latest]' -a judge=openai:gpt-4o":
        ECHO_IS_NOT_DATA + "tests/generators/test_preference_pairs.py (the CLI too)",
    "datagen generate -g hf:smollm2 -m preference-pairs -i prompts.jsonl -a "
    "'pool=[openai:gpt-4o-mini]' -a scorer=reward-model -a "
    "reward_model=Skywork/Skywork-Reward-Llama-3.1-8B-v0.2":
        "an 8B reward model from the Hub; tests/generators/test_preference_pairs_reward.py "
        "scores with a tiny local one (scorer reward-model and both)",
    "datagen generate -g openai:gpt-4o-mini -m preference-pairs -i prompts.jsonl -a "
    "'pool=[student:STUDENT_ID]'":
        "needs a trained student; tests/generators/test_preference_pairs_reward.py serves a "
        "tiny student folder through the hf backend",
    "datagen export 3f2a --push-to-hub org/name":
        "pushes to the Hub; tests/test_hub_export.py runs it with the Hub replaced by recorders "
        "and checks the dataset card",
    "datagen generate -g openai-batch:gpt-4o-mini -i prompts.jsonl -n 100000":
        "a real batch may take up to 24 hours; tests/generators/test_batch_backends.py runs "
        "both batch protocols (and a kill mid-poll) against generators.testing.batch_loopback",
    "datagen train RUN --recipe tiny-llama":
        "trains a student as a Ray task (minutes); training is covered by "
        "tests/students/test_training.py and the slow end-to-end tests",
    "datagen train RUN --recipe sft --ray-address http://head:8265":
        "Llama-3.1-8B on a Ray cluster",
    "datagen eval STUDENT_ID -t gsm8k -t math500 --limit 200":
        "needs a trained student (see `datagen train`); evaluation is covered by "
        "tests/students/test_evaluate.py",
    "datagen eval hf:smollm2 -t ifeval -t mbpp":
        "SmolLM2 on all of IFEval and MBPP (over 1,000 greedy generations on a CPU); "
        "hf:smollm2 evaluation is covered by tests/students/test_evaluate.py",
    "datagen select 3f2a 7c1e -k 256 --target task:gsm8k":
        "needs two runs of at least 256 rows and embeds them with SmolLM2 on the CPU (minutes); "
        "RDS+ selection is run end to end with a tiny real model by tests/test_select.py",
    "datagen eval STUDENT_ID -t winrate --judge openai:gpt-4o-mini -a source=href.jsonl -a "
    "guide_field=human -a category_field=category -a agreement=labels.jsonl":
        "needs a trained student, a categorised evaluation set and pairs labelled by people; "
        "tests/students/test_href.py runs the same task with a scripted judge",
    "datagen serve": SERVE_BLOCKS,
    "datagen -w datagen-workspace/bench/quickstart serve --port 8800": SERVE_BLOCKS,
}


def test_every_readme_command_is_run_or_skipped_with_a_reason():
    commands = readme_commands()
    assert len(commands) >= 20, commands  # the parser found the tour's commands
    unclassified = [c for c in commands if c not in RUN and c not in SKIP]
    assert not unclassified, (
        "README commands neither run nor skipped by tests/test_readme_commands.py (add each to "
        "RUN or SKIP):\n" + "\n".join(unclassified))
    stale = [c for c in [*RUN, *SKIP] if c not in commands]
    assert not stale, "no longer in the README (remove from RUN/SKIP):\n" + "\n".join(stale)
    assert not set(RUN) & set(SKIP)
    assert all(reason.strip() for reason in SKIP.values())


def test_the_parser_joins_continuations_and_splits_chains():
    text = ("```bash\n.venv/bin/pip install x && .venv/bin/datagen bench a.yaml\n"
            "datagen generate -g fake \\\n    -i 'my file.jsonl'   # a comment\n"
            "echo datagen; python -m datagen runs\n```\n```python\ndatagen no\n```\n")
    assert readme_commands(text) == ["datagen bench a.yaml",
                                     "datagen generate -g fake -i 'my file.jsonl'",
                                     "datagen runs"]


# -- running them ------------------------------------------------------------------------------


@dataclass
class World:
    cwd: Path
    workspaces: dict[str, Path]
    ids: dict[str, str]
    env: dict[str, str]
    loopback_env: dict[str, str]


def _console_script() -> str:
    beside = Path(sys.executable).parent / "datagen"
    found = str(beside) if beside.exists() else shutil.which("datagen")
    if found is None:
        pytest.fail("the `datagen` console script is not installed (pip install -e .)")
    return found


def _datagen(argv: list[str], world: World, workspace: str, *, loopback: bool = False,
             timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(world.env, DATAGEN_WORKSPACE=str(world.workspaces[workspace]))
    if loopback:
        env.update(world.loopback_env)
    return subprocess.run([_console_script(), *argv[1:]], cwd=world.cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _pairs_responder(request):
    m = request.meta
    if "order" in m:  # the judge: prefers the enhanced or original question, in both orders
        return ("Score A: 5\nScore B: 2\nBetter: A" if m["order"] == "ab" else
                "Score A: 2\nScore B: 5\nBetter: B")
    return (f"Original: When did it start for {m['row_id']}?\n"
            f"Enhanced: When exactly did the {m['attribute']} problem start?\n"
            "Corrupted: Things, stuff, when?")


def _plant_bench(root: Path) -> dict[str, str]:
    """A finished benchmark (tests/metrics/planting.py) plus a student trained on one of its
    runs, so `datagen pgr RUN` finds the student's evaluation itself."""
    import numpy as np

    from datagen_core.workspace import Workspace
    from metrics.scores import write_evaluation
    from metrics.store import Store
    from metrics.students_store import upsert_student
    from tests.metrics.planting import plant_benchmark

    store = Store(Workspace(root).ensure().db_path)
    runs = plant_benchmark(store, n_items=40)
    run_id = runs["openai:gpt-4o-mini|code"]
    upsert_student(store, student_id="readme-student", base_model="base-model",
                   recipe={"name": "tiny-llama", "kind": "sft"}, data_run_id=run_id,
                   status="finished", created_at=0.0, finished_at=1.0)
    rng = np.random.default_rng(1)
    scores = [float(rng.random() < 0.6) for _ in range(40)]
    write_evaluation(store, eval_id="readme-student-mbpp", model="readme-student",
                     student_id="readme-student", task="mbpp",
                     metrics={"accuracy": sum(scores) / len(scores)}, n=len(scores),
                     items=[{"item_id": f"q{i}", "idx": i, "score": s, "extracted": None,
                             "detail": {}} for i, s in enumerate(scores)])
    return {"bench_run": run_id, "base": "base-model", "ref": "reference-model"}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    import orjson
    import pyarrow as pa
    import pyarrow.parquet as pq

    from datagen import api
    from datagen_core.records import GeneratorSpec
    from generators.backends.fake import FakeBackend
    from tests.conftest import ASSETS, start_loopback

    root = tmp_path_factory.mktemp("readme")
    cwd = root / "cwd"
    cwd.mkdir()
    (cwd / "configs").symlink_to(ROOT / "configs")  # README paths are relative to the checkout
    (cwd / "prompts.jsonl").write_bytes(b"".join(
        orjson.dumps({"question": f"What is {i} + {i}?"}) + b"\n" for i in range(6)))
    pq.write_table(pa.table({"prompt": ["Name a colour.", "Name a fruit."]}),
                   cwd / "seeds.parquet")
    workspaces = {"gen": root / "ws", "bench": root / "bench-ws"}

    env = {k: v for k, v in os.environ.items()
           if not k.endswith("_API_KEY") and k not in ("OPENAI_BASE_URL", "ANTHROPIC_BASE_URL")}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               DATAGEN_EVAL_DIR=str(ASSETS), COLUMNS="200", NO_COLOR="1")

    ids = _plant_bench(workspaces["bench"])
    spec = GeneratorSpec.parse("fake:gen", limits={"max_retries": 0})
    pairs = api.generate(spec, None, n=2, method="attribute-variants",
                         method_args={"attributes": ["clarity", "focus"]},
                         backend=FakeBackend(spec, responder=_pairs_responder), progress=False,
                         workspace=workspaces["gen"])
    assert pairs.pairs, "the scripted preference run made no pairs"
    ids["pairs_run"] = pairs.run_id

    server = start_loopback()
    try:
        world = World(cwd, workspaces, ids, env, {
            "OPENAI_BASE_URL": server.url, "OPENAI_API_KEY": "sk-readme-test",
            "ANTHROPIC_BASE_URL": server.url.removesuffix("/v1"),
            "ANTHROPIC_API_KEY": "sk-ant-readme-test"})
        ids["vllm_spec"] = f"openai:meta-llama/Llama-3.1-8B-Instruct@{server.url}"
        # The run behind `3f2a` / `RUN`: the README's own offline generate command.
        r = _datagen(shlex.split("datagen -q generate -g fake -m quality-enhancement -d general"),
                     world, "gen")
        assert r.returncode == 0, r.stdout + r.stderr
        run = [x for x in api.list_runs(workspaces["gen"]) if x["method"] == "quality-enhancement"]
        ids["run"] = run[0]["run_id"]
        issues = api.generate("fake", None, n=24, method="template-expansion",
                              method_args={"sample": True}, progress=False,
                              workspace=workspaces["gen"])
        ids["issue_run"] = issues.run_id
        yield world
    finally:
        server.proc.kill()
        server.proc.wait(timeout=10)


@pytest.mark.parametrize("command", list(RUN), ids=list(RUN))
def test_readme_command_runs(command: str, world: World):
    spec = RUN[command]
    argv = [world.ids[spec.subs[tok]] if tok in spec.subs else tok
            for tok in shlex.split(command)]
    r = _datagen(argv, world, spec.workspace, loopback=spec.loopback)
    output = r.stdout + r.stderr
    shown = f"$ {shlex.join(argv)}\n(exit {r.returncode})\n{output}"
    assert r.returncode == 0, shown
    assert "Traceback" not in output and "internal error" not in output.lower(), shown
    assert spec.expect in " ".join(output.split()), shown
