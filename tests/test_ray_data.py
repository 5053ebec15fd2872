"""Runs executed as Ray Data pipelines, on a private local Ray on CPU.

A Ray run must be the plain run executed elsewhere: the same run id, the same rows, the same log,
and the same resume rule (what the log holds is never sent again). One local Ray serves the
module (starting one takes ~15 s here); the tests that need none come first. vLLM cannot run
here (no GPU): the Ray Data LLM processor is replaced at its module boundary
(``ray.data.llm.build_processor``) by a stage that answers like vLLM's, and the config handed to
it is checked field by field.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pytest
from typer.testing import CliRunner

from datagen import api
from datagen.cli import app
from datagen.ray_data import (
    RayData,
    batch_size_for,
    check_fits,
    gpus_per_replica,
    llm_processor_config,
    llm_sampling,
    ray_data_config,
)
from datagen_core.errors import BackendError, ConfigError, RunFailedError
from datagen_core.records import GeneratorSpec, GenRequest, Message, SamplingParams
from generators.backends.base import ProviderError, Reply
from generators.backends.fake import FakeBackend

ray = pytest.importorskip("ray")

runner = CliRunner()
# Workers unpickle this module's backends and fake stages by value: tests/ is not on their path.
import cloudpickle  # noqa: E402

cloudpickle.register_pickle_by_value(sys.modules[__name__])

PROMPTS = [f"question number {i}: what is {i} plus {i}?" for i in range(10)]


@pytest.fixture
def prompts(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_bytes(b"".join(orjson.dumps({"prompt": p}) + b"\n" for p in PROMPTS))
    return path


def _rows(data: Path) -> pd.DataFrame:
    """The data of a run without what differs between two executions of it (timings)."""
    df = pd.read_parquet(data)
    return df.drop(columns=[c for c in df.columns if "latency" in c or "created" in c])


def _log_keys(run_dir: Path) -> list[str]:
    return [orjson.loads(line)["key"] for line in (run_dir / "responses.jsonl").read_bytes()
            .splitlines()]


# -- no Ray needed -------------------------------------------------------------------------------
def test_settings_are_checked_before_a_run_exists(prompts: Path) -> None:
    assert ray_data_config(None) is None
    assert ray_data_config("auto") == RayData(address="auto")
    with pytest.raises(ConfigError, match="replicas"):
        ray_data_config({"address": "local", "replicas": 0})
    with pytest.raises(ConfigError, match="replica_count"):
        ray_data_config({"replica_count": 2})  # extra fields are refused, not ignored
    with pytest.raises(ConfigError, match="Jobs API address"):
        ray_data_config("http://head:8265")
    with pytest.raises(ConfigError, match="not a vllm"):
        api.generate("fake", str(prompts), ray={"llm_processor": True})
    with pytest.raises(ConfigError, match="batch API"):
        api.generate("openai-batch:gpt-4o-mini", str(prompts), ray="local")
    assert api.list_runs() == []
    r = runner.invoke(app, ["generate", "-g", "fake", "-i", str(prompts), "--ray-replicas", "2"])
    assert isinstance(r.exception, ConfigError)
    assert "--ray-replicas needs --ray-address" in str(r.exception)


def test_an_unreachable_cluster_is_one_line(prompts: Path, cli_env: dict[str, str]) -> None:
    r = subprocess.run([sys.executable, "-m", "datagen.cli", "generate", "-g", "fake", "-i",
                        str(prompts), "--ray-address", "ray://127.0.0.1:9"], env=cli_env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().startswith("error: cannot reach Ray at 'ray://127.0.0.1:9'"), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_batches_and_resources_follow_the_spec() -> None:
    cfg = RayData()
    hf = GeneratorSpec.parse("hf:tiny", options={"device": "cpu"})
    assert batch_size_for(hf, cfg) == 16 and gpus_per_replica(hf, cfg) == 0  # as a plain run
    hf_gpu = GeneratorSpec.parse("hf:tiny", options={"device": "cuda"}, limits={"batch_size": 8})
    assert batch_size_for(hf_gpu, cfg) == 8 and gpus_per_replica(hf_gpu, cfg) == 1
    vllm = GeneratorSpec.parse("vllm:m", options={"tensor_parallel_size": 2,
                                                  "pipeline_parallel_size": 2})
    assert batch_size_for(vllm, cfg) == 256  # not vLLM's whole-run batch: replicas share work
    assert gpus_per_replica(vllm, cfg) == 4
    assert gpus_per_replica(vllm, RayData(gpus_per_replica=0.5)) == 0.5
    check_fits(hf, cfg, {"CPU": 2.0})
    with pytest.raises(ConfigError, match="needs 1 GPUs; this machine's Ray has 0"):
        check_fits(hf_gpu, cfg, {"CPU": 2.0})
    with pytest.raises(ConfigError, match="needs 4 GPUs; this machine's Ray has 2"):
        check_fits(vllm, cfg, {"CPU": 16.0, "GPU": 2.0})


def test_the_vllm_processor_config_carries_replicas_and_parallelism() -> None:
    spec = GeneratorSpec.parse(
        "vllm:meta-llama/Llama-3.1-8B-Instruct",
        options={"tensor_parallel_size": 2, "max_model_len": 4096},
        sampling=SamplingParams(temperature=0.2, max_tokens=64, seed=7, stop=["\n\n"]))
    config = llm_processor_config(spec, RayData(replicas=4, batch_size=32,
                                                accelerator_type="H100"))
    assert type(config).__module__ == "ray.data.llm"
    assert config.model_source == "meta-llama/Llama-3.1-8B-Instruct"
    assert config.concurrency == 4 and config.batch_size == 32
    assert config.accelerator_type == "H100"
    assert config.engine_kwargs["tensor_parallel_size"] == 2
    assert config.engine_kwargs["max_model_len"] == 4096
    assert config.should_continue_on_error  # a bad row is recorded, the run goes on
    assert llm_processor_config(spec, RayData()).batch_size == 64
    with pytest.raises(ConfigError, match="Ray Data vLLM processor"):
        llm_processor_config(spec, RayData.model_construct(replicas=0))
    req = GenRequest(messages=[Message(role="user", content="hi")],
                     response_schema={"type": "object"})
    params = llm_sampling(spec, req)
    assert params == {"temperature": 0.2, "top_p": 1.0, "top_k": -1, "max_tokens": 64,
                      "seed": 7, "stop": ["\n\n"],
                      "structured_outputs": {"json": '{"type":"object"}'}}


# -- on a local Ray ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    from students.ray_jobs import local_ray

    with local_ray():
        yield


def test_a_ray_run_is_the_plain_run(local_ray: None, prompts: Path, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import datagen.ray_data as rd

    spec = "fake"
    plain = api.generate(spec, str(prompts), workspace=tmp_path / "plain", progress=False)
    pipelines: list[int] = []
    real = rd._batch_rows

    def counted(*args: Any) -> Iterator[Any]:
        pipelines.append(1)
        return real(*args)

    monkeypatch.setattr(rd, "_batch_rows", counted)
    r = runner.invoke(app, ["-q", "--workspace", str(tmp_path / "ray"), "generate", "-g", spec,
                            "-i", str(prompts), "--ray-address", "local", "--ray-replicas", "2"])
    assert r.exit_code == 0, r.output
    assert pipelines == [1]
    [run] = api.list_runs(tmp_path / "ray")
    assert run["run_id"] == plain.run_id and run["status"] == "finished"
    ray_dir = tmp_path / "ray" / "runs" / plain.run_id
    assert (ray_dir / "data.parquet").is_file()
    pd.testing.assert_frame_equal(_rows(plain.data_path), _rows(ray_dir / "data.parquet"))
    assert sorted(_log_keys(ray_dir)) == sorted(_log_keys(plain.run_dir))
    # the same command again sends nothing and starts no pipeline
    again = api.generate(spec, str(prompts), workspace=tmp_path / "ray", progress=False,
                         ray="local")
    assert again.stats.sent == 0 and again.stats.reused == len(PROMPTS) and pipelines == [1]


class FailsAfter(FakeBackend):
    """A batched fake whose replica dies (fatally) after ``ok`` batches."""

    batched = True

    def __init__(self, spec: GeneratorSpec, ok: int) -> None:
        super().__init__(spec)
        self.ok, self.calls = ok, 0

    async def complete_batch(self, requests: list[GenRequest],
                             sampling: list[SamplingParams]) -> list[Reply | BaseException]:
        self.calls += 1
        if self.calls > self.ok:
            raise ProviderError(None, f"replica lost after {self.ok} batches", kind="fatal")
        return [await self.complete(r, s) for r, s in zip(requests, sampling, strict=True)]


def test_a_failed_ray_run_resumes_without_resending(local_ray: None, prompts: Path,
                                                    tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import datagen.ray_data as rd

    spec = GeneratorSpec.parse("fake", limits={"batch_size": 3})
    ws = tmp_path / "ws"
    with pytest.raises(BackendError, match="replica lost after 2 batches"):
        api.generate(spec, str(prompts), workspace=ws, progress=False,
                     backend=FailsAfter(spec, ok=2), ray={"address": "local", "replicas": 1})
    [run] = api.list_runs(ws)
    assert run["status"] == "failed"
    answered = _log_keys(ws / "runs" / run["run_id"])
    assert len(answered) == 6  # two batches of 3, written as they came back
    # slices of 4: the log index answers across slices, each slice's rest is one pipeline
    pipelines: list[int] = []
    real = rd._batch_rows

    def counted(*args: Any) -> Iterator[Any]:
        pipelines.append(1)
        return real(*args)

    monkeypatch.setattr(rd, "_batch_rows", counted)
    result = api.generate(spec, str(prompts), workspace=ws, progress=False,
                          backend=FailsAfter(spec, ok=99),
                          ray={"address": "local", "slice_size": 4})
    assert len(pipelines) >= 2  # the streaming path: more than one slice went through Ray
    assert result.stats.reused == 6 and result.stats.sent == len(PROMPTS) - 6
    keys = _log_keys(result.run_dir)
    assert len(keys) == len(set(keys)) == len(PROMPTS)  # every request answered exactly once
    plain = api.generate(spec, str(prompts), workspace=tmp_path / "plain", progress=False)
    assert plain.run_id == result.run_id
    pd.testing.assert_frame_equal(_rows(plain.data_path), _rows(result.data_path))


def _fake_vllm_stage(row: dict[str, Any]) -> dict[str, Any]:
    """What the processor's vLLM stage adds to a row; the prompt mentioning 7 fails."""
    prompt = row["messages"][-1]["content"]
    if "number 7" in prompt:
        return {**row, "__inference_error__": "ValueError: prompt too long (9000 > 4096 tokens)"}
    words = f"vllm answer to {prompt}".split()[: int(row["sampling_params"]["max_tokens"])]
    return {**row, "generated_text": " ".join(words), "num_input_tokens": len(prompt.split()),
            "num_generated_tokens": len(words), "time_taken_llm": 0.01,
            "__inference_error__": ""}


def test_vllm_specs_go_through_the_llm_processor(local_ray: None, prompts: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import ray.data.llm

    built: list[Any] = []

    def build_processor(config: Any, postprocess: Any = None, **kw: Any) -> Any:
        built.append(config)

        def apply(ds: Any) -> Any:
            ds = ds.map(_fake_vllm_stage)
            # as Ray's processor does: rows that failed skip the postprocess
            return ds.map(lambda r: r if r["__inference_error__"] else
                          {**postprocess(r), "__inference_error__": ""})
        return apply

    monkeypatch.setattr(ray.data.llm, "build_processor", build_processor)
    import datagen.ray_data as rd

    monkeypatch.setattr(rd, "check_fits", lambda *a: None)  # the 2 GPUs asked for are faked too
    spec = GeneratorSpec.parse("vllm:some/model", options={"tensor_parallel_size": 2},
                               sampling=SamplingParams(max_tokens=50, temperature=0))
    ray_cfg = {"address": "local", "replicas": 2}
    result = api.generate(spec, str(prompts), progress=False, ray=ray_cfg,
                          max_failure_rate=0.2)
    [config] = built
    assert config.concurrency == 2 and config.engine_kwargs["tensor_parallel_size"] == 2
    assert result.stats.sent == 10 and result.stats.failed == 1 and result.stats.ok == 9
    rows = {x.messages[0].content: x.messages[-1].content for x in result.valid}
    assert rows[PROMPTS[3]] == f"vllm answer to {PROMPTS[3]}"
    responses = api.load_responses(result.run_id)
    failed = [r for r in responses if r.error]
    assert len(failed) == 1 and "prompt too long" in failed[0].error.message
    assert {r.finish_reason for r in responses if r.ok} == {"stop"}
    # the same run again sends only the failed row
    again = api.generate(spec, str(prompts), progress=False, ray=ray_cfg, max_failure_rate=0.2)
    assert again.run_id == result.run_id
    assert again.stats.reused == 9 and again.stats.sent == 1


@pytest.mark.slow
def test_an_hf_ray_run_is_the_plain_run(local_ray: None, prompts: Path, tmp_path: Path) -> None:
    """A tiny random Llama (greedy, float32 on CPU), loaded by two replicas, answers exactly as
    in a plain run, batches of 4 with left padding included. Its answers never end (all are
    truncated, so both runs keep no row): the answers and the rejections are compared."""
    pytest.importorskip("transformers")
    from tests.generators.test_hf_backend import _build_tiny

    model = tmp_path / "tiny"
    _build_tiny(model)
    spec = GeneratorSpec.parse(f"hf:{model}", options={"device": "cpu", "threads": 1},
                               sampling=SamplingParams(temperature=0, max_tokens=8),
                               limits={"batch_size": 4})
    runs = {}
    for name, ray_cfg in (("plain", None), ("ray", {"address": "local", "replicas": 2})):
        with pytest.raises(RunFailedError, match="kept no row") as failed:
            api.generate(spec, str(prompts), workspace=tmp_path / name, progress=False,
                         ray=ray_cfg)
        runs[name] = failed.value.result
    plain, on_ray = runs["plain"], runs["ray"]
    assert on_ray.run_id == plain.run_id and on_ray.stats.sent == len(PROMPTS)

    def answers(name: str) -> dict[str, tuple[Any, ...]]:
        return {r.key: (r.text, r.finish_reason, r.usage.prompt_tokens, r.usage.completion_tokens)
                for r in api.load_responses(plain.run_id, tmp_path / name)}

    assert answers("ray") == answers("plain")
    assert len({a[0] for a in answers("plain").values()}) > 5  # distinct: order is observable
    assert ((tmp_path / "ray" / "runs" / plain.run_id / "rejected.jsonl").read_bytes()
            == (plain.run_dir / "rejected.jsonl").read_bytes())


@pytest.mark.slow
def test_a_killed_ray_run_resumes_without_resending(local_ray: None, tmp_path: Path,
                                                     cli_env: dict[str, str]) -> None:
    """SIGKILL a `datagen generate --ray-address local` mid-way: what its log holds is never
    sent again, and every request ends up answered exactly once."""
    import os
    import signal
    import time

    from generators.response_log import iter_log

    prompts = tmp_path / "many.jsonl"
    prompts.write_bytes(b"".join(orjson.dumps({"prompt": f"slow question {i}"}) + b"\n"
                                 for i in range(40)))
    gen = tmp_path / "slow-fake.yaml"  # 4 prompts a batch, 0.3 s each, one at a time
    gen.write_text("spec: fake\nlimits: {concurrency: 1, batch_size: 4}\n"
                   "options: {delay_s: 0.3}\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "datagen.cli", "-q", "generate", "-g", str(gen), "-i",
         str(prompts), "--no-decontaminate", "--ray-address", "local"],
        env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    ws = Path(cli_env["DATAGEN_WORKSPACE"])
    deadline = time.monotonic() + 180
    logged: list[dict[str, Any]] = []
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            logs = list(ws.glob("runs/*/responses.jsonl"))
            logged = list(iter_log(logs[0])) if logs else []
            if len(logged) >= 8:
                break
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert 8 <= len(logged) < 40, f"killed after {len(logged)} answers"
    [log_path] = ws.glob("runs/*/responses.jsonl")
    before = {r["key"] for r in iter_log(log_path)}
    result = api.generate(str(gen), str(prompts), workspace=ws, progress=False,
                          curation={"decontaminate": False}, ray="local")
    assert result.run_id == log_path.parent.name
    assert result.stats.reused == len(before) and result.stats.sent == 40 - len(before)
    keys = [r["key"] for r in iter_log(log_path)]
    assert len(keys) == len(set(keys)) == 40
