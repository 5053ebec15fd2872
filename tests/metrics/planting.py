"""Helpers that plant runs, instances, requests and evaluations in a workspace database, and
build tiny local models (a causal LM and a reward model) from configs, offline, in seconds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from datagen_core.records import GeneratorSpec, GenResponse, Instance, Message, RunManifest
from metrics.scores import write_evaluation
from metrics.store import Store

Row = tuple[str, str, bool, "str | None"]  # instruction, response, valid, reject reason


def plant_run(store: Store, run_id: str, rows: Sequence[Row], *, generator: str = "fake:gen",
              method: str = "response-generation", domain: str | None = "general",
              requests: Sequence[tuple[int, int, float]] = (), cost_usd: float = 0.0) -> None:
    """A finished run with these instances and request rows (prompt, completion tokens, cost)."""
    manifest = RunManifest(run_id=run_id, created_at=0.0,
                           generator=GeneratorSpec.parse(generator), method=method,
                           method_version="1", domain=domain)
    instances = [Instance(index=i, instance_id=f"{run_id}-{i}",
                          messages=[Message(role="user", content=q),
                                    Message(role="assistant", content=a)],
                          valid=ok, reject_reason=why)
                 for i, (q, a, ok, why) in enumerate(rows)]
    store.write_instances(run_id, instances)
    store.ingest_responses(run_id, [
        GenResponse(key=f"{run_id}-k{i}", text="x",
                    usage={"prompt_tokens": p, "completion_tokens": c}, cost_usd=usd)
        for i, (p, c, usd) in enumerate(requests)])
    store.upsert_run(manifest, "finished", n_instances=len(rows),
                     n_valid=sum(r[2] for r in rows), cost_usd=cost_usd)


def plant_eval(store: Store, eval_id: str, model: str, task: str,
               scores: Mapping[str, float | None]) -> None:
    items = [{"item_id": k, "idx": i, "score": v, "extracted": None, "detail": {}}
             for i, (k, v) in enumerate(scores.items())]
    got = [v for v in scores.values() if v is not None]
    write_evaluation(store, eval_id=eval_id, model=model, student_id=None, task=task,
                     metrics={"accuracy": sum(got) / len(got) if got else float("nan")},
                     n=len(got), items=items)


CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_models(root: Path) -> dict[str, Path]:
    """A byte-level BPE tokenizer (ChatML template) and, sharing it, a 2-layer Llama causal LM
    and a 1-label Llama reward model, saved as ordinary HF folders."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        LlamaForSequenceClassification,
        PreTrainedTokenizerFast,
    )

    corpus = [
        "What is two plus three? Two plus three is five.",
        "Write a function that reverses a string in Python.",
        "def reverse(s): return s[::-1]",
        "Explain why the sky is blue in one sentence.",
        "Rayleigh scattering makes short blue wavelengths scatter more.",
    ] * 20
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|pad|>", "<|im_start|>", "<|im_end|>"]
    tok.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=300, special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|pad|>",
                                   eos_token="<|im_end|>", bos_token="<|im_start|>")
    fast.chat_template = CHATML
    torch.manual_seed(0)
    cfg = dict(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
               pad_token_id=fast.pad_token_id, bos_token_id=fast.bos_token_id,
               eos_token_id=fast.eos_token_id)
    paths = {"lm": root / "tiny-lm", "rm": root / "tiny-rm"}
    LlamaForCausalLM(LlamaConfig(**cfg)).save_pretrained(paths["lm"])
    LlamaForSequenceClassification(LlamaConfig(**cfg, num_labels=1)).save_pretrained(paths["rm"])
    for p in paths.values():
        fast.save_pretrained(p)
    return paths


BENCH_TASKS = {"math": ("gsm8k", "math500"), "code": ("mbpp",)}
BENCH_GENERATORS = {  # generator -> (probability its students solve an item, cost of its data)
    "openai:gpt-4o-mini": (0.70, 0.40),
    "anthropic:claude-3-5-haiku": (0.66, 0.90),
    "vllm:llama-3.1-8b": (0.50, 0.05),
    "hf:smollm2": (0.33, 0.0),
}


def plant_benchmark(store: Store, n_items: int = 80, seed: int = 0) -> dict[str, str]:
    """A small finished benchmark: per domain a base (p=0.3) and a reference (p=0.8) evaluated
    on each task, per generator x domain a run with instances, request costs and a student
    evaluation; stats computed and PGR stored. Returns run ids by "generator|domain"."""
    import numpy as np

    from metrics.intrinsic import compute_intrinsic
    from metrics.pgr import compute_pgr

    rng = np.random.default_rng(seed)

    def draw(p: float) -> dict[str, float]:
        return {f"q{i}": float(rng.random() < p) for i in range(n_items)}

    for tasks in BENCH_TASKS.values():
        for task in tasks:
            plant_eval(store, f"base-{task}", "base-model", task, draw(0.3))
            plant_eval(store, f"ref-{task}", "reference-model", task, draw(0.8))
    runs = {}
    for g, (gen, (p, cost)) in enumerate(BENCH_GENERATORS.items()):
        for domain, tasks in BENCH_TASKS.items():
            run_id = f"run-{g}-{domain}"
            rows: list[Row] = [(f"{domain} question {i} " + "word " * (i % 7 + g),
                                f"answer {i} " + "step " * (3 * g + i % 5), i % (g + 3) != 0,
                                None if i % (g + 3) else "curation: exact duplicate of #0")
                               for i in range(12 + 3 * g)]
            plant_run(store, run_id, rows, generator=gen, domain=domain,
                      requests=[(40 + g, 90 + 20 * g, cost / 10)] * 10, cost_usd=cost)
            students = []
            for task in tasks:
                plant_eval(store, f"student-{g}-{task}", f"student-{g}-{domain}", task, draw(p))
                students.append(f"student-{g}-{task}")
            compute_intrinsic(store, run_id, "stats")
            compute_pgr(store, run_id, students=students, base="base-model",
                        reference="reference-model", n_boot=300)
            runs[f"{gen}|{domain}"] = run_id
    return runs
