"""Students: recipes, ids, real (tiny) training with TRL, no retraining, Ray tasks and Ray jobs.

The CPU students here are real models trained by the same code path a GPU user runs with
Llama-3.1-8B: a 0.7M-parameter Llama built from a config (seconds) and, marked slow, SmolLM2 with
LoRA. Ray tests start their own Ray and never touch ~/.ray: the token comes from the environment.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from datagen.training import list_students, show_student, train, train_many
from datagen_core.errors import ConfigError, DatagenError, InputError
from students import train as train_mod
from students.recipes import PRESETS, Recipe, load_recipe
from students.records import DataRef
from students.train import build_trainer, load_examples, student_id, train_student

# -- data ----------------------------------------------------------------------------------------


def addition(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randrange(100), rng.randrange(100)
        rows.append({"messages": [{"role": "user", "content": f"What is {a} plus {b}?"},
                                  {"role": "assistant", "content": str(a + b)}]})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


@pytest.fixture
def add_file(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "add.jsonl", addition(128))


@pytest.fixture
def add_run(tmp_path: Path) -> str:
    """A real run made by the fake backend: addition prompts, correct answers."""
    from datagen.api import generate
    from datagen_core.records import GeneratorSpec
    from generators.backends.fake import FakeBackend

    prompts = tmp_path / "prompts.jsonl"
    write_jsonl(prompts, [{"prompt": r["messages"][0]["content"]} for r in addition(96, seed=1)])

    def answer(request) -> str:
        a, b = map(int, re.findall(r"\d+", request.messages[-1].content))
        return str(a + b)

    backend = FakeBackend(GeneratorSpec.parse("fake"), responder=answer)
    result = generate("fake", str(prompts), backend=backend, progress=False)
    assert len(result.valid) == 96
    return result.run_id


def tiny(**overrides) -> Recipe:
    """The tiny-llama preset, made quicker for tests."""
    return load_recipe("tiny-llama", **{"epochs": 3, "batch_size": 16, **overrides})


@pytest.fixture
def ray_env(monkeypatch: pytest.MonkeyPatch) -> str:
    """Token auth as Ray 2.60 wants it, from the environment (nothing written to ~/.ray)."""
    token = uuid.uuid4().hex
    monkeypatch.setenv("RAY_AUTH_TOKEN", token)
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return token


# -- recipes and ids -----------------------------------------------------------------------------


def test_presets_overrides_and_bad_fields(tmp_path):
    for name in PRESETS:
        assert load_recipe(name).name == name
    gpu = load_recipe("sft")
    assert gpu.base_model == "meta-llama/Llama-3.1-8B" and gpu.lora is None
    assert gpu.resources.num_gpus == 1 and gpu.batch_size * gpu.grad_accum == 64
    t = load_recipe("tiny-llama", epochs=2, resources={"num_cpus": 2})
    assert t.epochs == 2 and t.resources.num_cpus == 2 and t.scratch is not None
    assert t.scratch.hidden_size == 128 and t.scratch.num_layers == 4
    assert load_recipe("smollm2-lora").lora.target_modules == ["q_proj", "k_proj", "v_proj",
                                                                "o_proj"]
    f = tmp_path / "r.yaml"
    f.write_text("preset: tiny-llama\nlearning_rate: 0.001\nscratch: {hidden_size: 64}\n")
    r = load_recipe(str(f))
    assert r.learning_rate == 1e-3 and r.scratch.hidden_size == 64 and r.epochs == 6
    with pytest.raises(ConfigError, match="epoch"):
        load_recipe("tiny-llama", epoch=3)  # a typo is an error, not ignored
    with pytest.raises(ConfigError, match="scratch"):
        load_recipe("sft", scratch={"hidden_size": 64})
    with pytest.raises(ConfigError, match="unknown recipe"):
        load_recipe("nope")


def test_student_id_is_stable_and_ignores_operational_fields():
    data = DataRef(path="/anywhere/add.jsonl", fingerprint="0123456789abcdef")
    sid = student_id(load_recipe("tiny-llama"), data)
    assert sid == "f598657bb079c5db"  # pinned: ids must survive refactors
    moved = DataRef(path="/elsewhere/x.jsonl", fingerprint="0123456789abcdef")
    assert student_id(load_recipe("tiny-llama"), moved) == sid
    same = load_recipe("tiny-llama", name="other", logging_steps=1, resources={"num_cpus": 2})
    assert student_id(same, data) == sid
    assert student_id(load_recipe("tiny-llama", learning_rate=1e-3), data) != sid
    from_run = DataRef(path="/x", fingerprint="0123456789abcdef", run_id="r1")
    assert student_id(load_recipe("tiny-llama"), from_run) != sid


# -- training in this process --------------------------------------------------------------------


def test_tiny_student_trains_on_a_run_saves_reloads_and_is_not_retrained(add_run, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    rec = train(add_run[:8], tiny(), use_ray=False)  # a run id prefix, like git
    assert rec.status == "finished" and rec.data.run_id == add_run
    assert rec.n_examples == 96 and rec.steps == 18 and rec.device == "cpu"
    assert 0.5e6 < rec.n_params < 1e6
    folder = Path(rec.path)
    assert folder.parent.name == rec.student_id
    # the loss curve: logged from the first step on, and going down
    losses = orjson.loads((folder.parent / "loss.json").read_bytes())
    assert losses[0]["step"] == 1 and losses[-1]["loss"] < losses[0]["loss"] - 1.0
    history = [orjson.loads(x) for x in (folder.parent / "metrics.jsonl").read_bytes().split()]
    assert any("train_runtime" in h for h in history)
    assert rec.final_loss == losses[-1]["loss"]
    # a model like any other
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert tok.tokenize("12 plus 345")[:2] == ["1", "2"]  # digits are single tokens
    assert "generation" in tok.chat_template and tok.eos_token == "<|im_end|>"
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is 2 plus 3?"}],
                                     add_generation_prompt=True, return_tensors="pt",
                                     return_dict=True)
    out = model.generate(**prompt, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > prompt["input_ids"].shape[1]
    # the store knows it, by prefix too
    rows = list_students()
    assert [(r["student_id"], r["status"]) for r in rows] == [(rec.student_id, "finished")]
    assert rows[0]["recipe_name"] == "tiny-llama" and rows[0]["data_run_id"] == add_run
    assert show_student(rec.student_id[:6]).final_loss == rec.final_loss

    # asking again trains nothing: no trainer is even built
    def no_training(*a, **k):
        raise AssertionError("retrained a finished student")

    monkeypatch.setattr(train_mod, "build_trainer", no_training)
    again = train(add_run, tiny(name="same weights, other label"), use_ray=False)
    assert again.student_id == rec.student_id and again.finished_at == rec.finished_at
    assert train_student(tiny(), add_run).finished_at == rec.finished_at


def test_sft_loss_is_on_assistant_tokens_only(add_file, tmp_path):
    rows = load_examples(DataRef(path=str(add_file), fingerprint="x"))
    trainer = build_trainer(tiny(), rows[:8], tmp_path / "t")
    tok = trainer.processing_class
    for row, ex in zip(rows, trainer.train_dataset):
        ids, labels = ex["input_ids"], ex["labels"]
        trained = [i for i, lab in zip(ids, labels) if lab != -100]
        assert all(lab in (-100, i) for i, lab in zip(ids, labels))
        # exactly the answer and its end-of-turn token; every prompt token is masked
        assert tok.decode(trained) == row["messages"][1]["content"] + "<|im_end|>"
        first = labels.index(next(lab for lab in labels if lab != -100))
        assert first > 10 and all(lab == -100 for lab in labels[:first])


def test_dpo_recipe_trains_two_steps(tmp_path):
    pairs = []
    for r in addition(16, seed=2):
        q, a = r["messages"][0]["content"], int(r["messages"][1]["content"])
        pairs.append({"prompt": [{"role": "user", "content": q}],
                      "chosen": [{"role": "assistant", "content": str(a)}],
                      "rejected": [{"role": "assistant", "content": str(a + 1)}],
                      "attribute": "accuracy", "evidence": {"judge": "x"}})
    f = write_jsonl(tmp_path / "pairs.jsonl", pairs)
    rec = train(str(f), load_recipe("tiny-llama-dpo", max_steps=2, batch_size=4), use_ray=False)
    assert rec.status == "finished" and rec.steps == 2 and rec.recipe.kind == "dpo"
    history = [orjson.loads(x) for x in (Path(rec.path).parent / "metrics.jsonl").read_bytes()
               .split()]
    assert any("rewards/margins" in h for h in history)
    assert (Path(rec.path) / "model.safetensors").is_file()
    with pytest.raises(InputError, match="prompt/chosen/rejected"):
        train(str(write_jsonl(tmp_path / "sft.jsonl", addition(4))), "tiny-llama-dpo",
              use_ray=False)


def test_a_failed_training_leaves_nothing_that_looks_finished(add_file, monkeypatch):
    from datagen_core.workspace import Workspace

    def crash(*a, **k):
        raise InputError("simulated failure while training")

    monkeypatch.setattr(train_mod, "build_trainer", crash)
    with pytest.raises(InputError, match="simulated"):
        train(str(add_file), tiny(), use_ray=False)
    ws = Workspace.resolve()
    assert list(ws.students_dir.iterdir()) == []  # no student folder, no temp folder left
    [row] = list_students()
    assert row["status"] == "failed" and "simulated" in row["error"]


def test_cli_train_and_students(add_file):
    from datagen.cli import app

    runner = CliRunner()
    r = runner.invoke(app, ["-q", "train", str(add_file), "--no-ray", "--max-steps", "2",
                            "--batch-size", "8"])
    assert r.exit_code == 0, r.output
    sid = re.search(r"student (\w{16})", r.output).group(1)
    r = runner.invoke(app, ["students"], env={"COLUMNS": "200"})
    assert r.exit_code == 0 and sid in r.output and "finished" in r.output
    r = runner.invoke(app, ["students", "show", sid[:5]], env={"COLUMNS": "200"})
    assert r.exit_code == 0 and "tiny-llama" in r.output and "model" in r.output


# -- Ray -----------------------------------------------------------------------------------------


def test_a_recipe_that_cannot_fit_fails_at_once():
    from students.ray_jobs import _check_fits

    job = (load_recipe("sft"), DataRef(path="x", fingerprint="y"))
    with pytest.raises(ConfigError, match="1 GPUs"):
        _check_fits([job], {"CPU": 16.0})


def test_two_students_train_side_by_side_on_a_local_ray(add_file, ray_env):
    started = time.monotonic()
    a, b = train_many([(str(add_file), tiny(seed=1, max_steps=12)),
                       (str(add_file), tiny(seed=2, max_steps=12))], timeout_s=240)
    assert a.status == b.status == "finished" and a.student_id != b.student_id
    # they overlapped in time: each ran in its own Ray worker with one CPU
    assert max(a.started_at, b.started_at) < min(a.finished_at, b.finished_at)
    assert {r["status"] for r in list_students()} == {"finished"}
    assert time.monotonic() - started < 240


# -- Ray Jobs API on a head started here ---------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop_head(proc: subprocess.Popen) -> None:
    """Stop the head we started, and only it: SIGTERM to `ray start --block` shuts its cluster
    down; whatever of its process group is left gets SIGKILL. (`ray stop` would stop every Ray
    of this user on the machine.)"""
    proc.send_signal(signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=30)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        time.sleep(2)


@pytest.mark.slow
def test_jobs_api_on_a_ray_head_started_here(add_file, tmp_path, monkeypatch):
    from students.ray_jobs import job_client

    venv_bin = str(Path(sys.executable).parent)
    token = uuid.uuid4().hex
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token,
           "RAY_USAGE_STATS_ENABLED": "0", "PATH": f"{venv_bin}:{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    cwd = tmp_path / "head"  # a folder without a ray/ subfolder
    cwd.mkdir()
    temp_dir = tempfile.mkdtemp(prefix="dgh-", dir="/tmp")  # short: socket paths are limited
    dash = _free_port()
    log = open(tmp_path / "head.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [f"{venv_bin}/ray", "start", "--head", "--block", f"--port={_free_port()}",
         "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
         f"--dashboard-port={dash}", f"--ray-client-server-port={_free_port()}",
         "--num-cpus=2", f"--temp-dir={temp_dir}", "--disable-usage-stats"],
        cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    # the client side: a token in the environment, RAY_AUTH_MODE left for our code to set
    monkeypatch.setenv("RAY_AUTH_TOKEN", token)
    monkeypatch.setenv("RAY_AUTH_MODE", "")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    address = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                job_client(address).list_jobs()
                break
            except Exception:
                assert proc.poll() is None, (tmp_path / "head.log").read_text()[-2000:]
                assert time.monotonic() < deadline, "the Ray head did not come up in 120 s"
                time.sleep(1)
        assert os.environ["RAY_AUTH_MODE"] == "token"  # set by students.ray_jobs
        with pytest.raises(urllib.error.HTTPError) as denied:  # the head does want the token
            urllib.request.urlopen(f"{address}/api/jobs/", timeout=10)
        assert denied.value.code == 401
        rec = train(str(add_file), tiny(max_steps=3), ray_address=address, timeout_s=300)
        assert rec.status == "finished" and rec.steps == 3
        assert (Path(rec.path) / "model.safetensors").is_file()
        assert [r["status"] for r in list_students()] == ["finished"]
        # a job's own one-line error comes back
        bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "no messages here"}])
        with pytest.raises(DatagenError, match="needs a 'messages' column"):
            train(str(bad), tiny(max_steps=1), ray_address=address, timeout_s=300)
    finally:
        _stop_head(proc)
        log.close()
        import shutil

        shutil.rmtree(temp_dir, ignore_errors=True)


# -- a real pretrained student -------------------------------------------------------------------


@pytest.mark.slow
def test_smollm2_lora_trains_two_steps(add_file):
    from transformers import AutoModelForCausalLM

    rec = train(str(add_file), load_recipe("smollm2-lora", max_steps=2, batch_size=4),
                use_ray=False)
    assert rec.status == "finished" and rec.steps == 2
    folder = Path(rec.path)
    assert (folder.parent / "adapter" / "adapter_config.json").is_file()
    model = AutoModelForCausalLM.from_pretrained(folder)  # LoRA merged: a plain model
    assert 130e6 < sum(p.numel() for p in model.parameters()) < 140e6
