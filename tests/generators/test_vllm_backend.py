"""The vllm backend with vLLM replaced at the module boundary.

vLLM needs a CUDA GPU and is never installed in the dev environment, so a fake ``vllm`` module in
``sys.modules`` records what the backend asks of it: the ``LLM(...)`` construction, every ``chat``
call and every ``SamplingParams``. The engine drives the backend as in a real run.
"""

from __future__ import annotations

import sys
import types
from typing import Any, ClassVar

import pytest

from datagen_core.errors import BackendError, MissingDependencyError
from datagen_core.records import GeneratorSpec, GenRequest, Limits, Message, SamplingParams
from generators.engine import Engine


class FakeSamplingParams:
    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs


class FakeStructured:
    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs


class FakeLLM:
    instances: ClassVar[list[FakeLLM]] = []

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.calls: list[dict[str, Any]] = []
        FakeLLM.instances.append(self)

    def chat(self, messages: Any, sampling_params: Any = None, use_tqdm: bool = True) -> list[Any]:
        self.calls.append(
            {"messages": messages, "sampling_params": sampling_params, "use_tqdm": use_tqdm}
        )
        outs = []
        for i, (conv, sp) in enumerate(zip(messages, sampling_params, strict=True)):
            prompt = conv[-1]["content"]
            words = f"out for {prompt} and more words".split()
            n = sp.kwargs["max_tokens"]
            completion = types.SimpleNamespace(
                text=" ".join(words[:n]),
                token_ids=list(range(min(n, len(words)))),
                finish_reason="length" if len(words) > n else "stop",
                stop_reason=None,
            )
            outs.append(types.SimpleNamespace(
                request_id=str(i), prompt_token_ids=list(range(len(prompt.split()) + 3)),
                outputs=[completion],
            ))
        return outs


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    FakeLLM.instances = []
    mod = types.ModuleType("vllm")
    mod.LLM = FakeLLM  # type: ignore[attr-defined]
    mod.SamplingParams = FakeSamplingParams  # type: ignore[attr-defined]
    sub = types.ModuleType("vllm.sampling_params")
    sub.StructuredOutputsParams = FakeStructured  # type: ignore[attr-defined]
    mod.sampling_params = sub  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vllm", mod)
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", sub)
    return mod


def req(text: str, sampling: SamplingParams | None = None, **kw: Any) -> GenRequest:
    return GenRequest(
        messages=[Message(role="system", content="sys"), Message(role="user", content=text)],
        sampling=sampling, **kw,
    )


def spec(**fields: Any) -> GeneratorSpec:
    return GeneratorSpec.parse("vllm:org/tiny-model", **fields)


async def test_one_chat_call_in_order(fake_vllm) -> None:
    prompts = [f"p{i}" for i in range(25)]
    s = spec(
        sampling=SamplingParams(temperature=0.5, top_p=0.9, max_tokens=64, seed=3, stop=["###"]),
        options={"tensor_parallel_size": 2, "dtype": "bfloat16", "max_model_len": 4096,
                 "gpu_memory_utilization": 0.8, "seed": 11},
    )
    async with Engine(s, progress=False) as eng:
        out = await eng.generate([req(p) for p in prompts])

    [llm] = FakeLLM.instances
    assert llm.kwargs == {"model": "org/tiny-model", "tensor_parallel_size": 2,
                          "dtype": "bfloat16", "max_model_len": 4096,
                          "gpu_memory_utilization": 0.8, "seed": 11}
    [call] = llm.calls  # every prompt in ONE chat call
    assert call["use_tqdm"] is False
    assert [c[-1]["content"] for c in call["messages"]] == prompts
    assert call["messages"][0] == [{"role": "system", "content": "sys"},
                                   {"role": "user", "content": "p0"}]
    assert len(call["sampling_params"]) == 25
    assert call["sampling_params"][0].kwargs == {
        "temperature": 0.5, "top_p": 0.9, "top_k": -1, "max_tokens": 64, "seed": 3,
        "stop": ["###"],
    }
    assert [r.text for r in out] == [f"out for {p} and more words" for p in prompts]
    for r in out:
        assert r.error is None
        assert r.finish_reason == "stop"
        assert r.usage.prompt_tokens == 4
        assert r.usage.completion_tokens == 6
        assert r.model == "org/tiny-model"
    assert eng.stats.ok == 25 and eng.stats.completion_tokens == 150


async def test_per_request_sampling_and_finish_reasons(fake_vllm) -> None:
    greedy = SamplingParams(temperature=0.0, top_k=5, max_tokens=2, seed=7)
    requests = [req("a"), req("b", sampling=greedy), req("c")]
    async with Engine(spec(), progress=False) as eng:
        out = await eng.generate(requests)
    [call] = FakeLLM.instances[0].calls
    default, special, default2 = (p.kwargs for p in call["sampling_params"])
    assert default == default2 == {
        "temperature": 0.7, "top_p": 1.0, "top_k": -1, "max_tokens": 512, "seed": None,
    }
    assert special == {
        "temperature": 0.0, "top_p": 1.0, "top_k": 5, "max_tokens": 2, "seed": 7,
    }
    assert [r.finish_reason for r in out] == ["stop", "length", "stop"]
    assert out[1].text == "out for" and out[1].usage.completion_tokens == 2
    assert out[1].raw == {"request_id": "1", "finish_reason": "length", "stop_reason": None}


async def test_batch_size_splits_calls(fake_vllm) -> None:
    async with Engine(spec(limits=Limits(batch_size=4)), progress=False) as eng:
        out = await eng.generate([req(f"q{i}") for i in range(10)])
    calls = FakeLLM.instances[0].calls
    assert [len(c["messages"]) for c in calls] == [4, 4, 2]
    assert [r.text.split()[2] for r in out] == [f"q{i}" for i in range(10)]


async def test_response_schema_structured_output(fake_vllm, monkeypatch) -> None:
    schema = {"type": "object", "properties": {"x": {"type": "integer"}}}
    async with Engine(spec(), progress=False) as eng:
        await eng.generate([req("j", response_schema=schema), req("plain")])
    structured, plain = FakeLLM.instances[0].calls[0]["sampling_params"]
    assert structured.kwargs["structured_outputs"].kwargs == {"json": schema}
    assert "structured_outputs" not in plain.kwargs

    # Older vLLM: GuidedDecodingParams, passed as guided_decoding=.
    old = types.ModuleType("vllm.sampling_params")
    old.GuidedDecodingParams = FakeStructured  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", old)
    async with Engine(spec(), progress=False) as eng:
        await eng.generate([req("j2", response_schema=schema)])
    [sp] = FakeLLM.instances[1].calls[0]["sampling_params"]
    assert sp.kwargs["guided_decoding"].kwargs == {"json": schema}


async def test_load_failure_is_one_line(fake_vllm, monkeypatch) -> None:
    def broken(**kwargs: Any) -> None:
        raise RuntimeError("No CUDA GPUs are available")

    monkeypatch.setattr(fake_vllm, "LLM", broken)
    with pytest.raises(BackendError, match=r"No CUDA GPUs.*needs a CUDA GPU"):
        async with Engine(spec(), progress=False) as eng:
            await eng.generate([req("x")])


async def test_missing_vllm(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'datagen\[vllm\]'"):
        async with Engine(spec(), progress=False) as eng:
            await eng.generate([req("x")])


async def test_out_of_memory_stops_the_run(fake_vllm, monkeypatch) -> None:
    class OutOfMemoryError(RuntimeError):
        pass

    def oom(self: FakeLLM, *args: Any, **kwargs: Any) -> None:
        raise OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(FakeLLM, "chat", oom)
    with pytest.raises(BackendError, match=r"GPU out of memory.*batch_size"):
        async with Engine(spec(), progress=False) as eng:
            await eng.generate([req("x"), req("y")])
