"""Metrics that run a local model over the data: response perplexity and reward-model score.

Perplexity asks "how surprising is this response to a student's base model?" (data a student
already predicts well teaches it little; data it finds very unlikely may be noise). The default
scorer is ``smollm2``, the base model of the CPU student recipes; any causal LM folder or hub id
works. The instruction is formatted with the model's chat template (plain ``instruction\\n\\n``
without one) and only the response's tokens count. The response is tokenized on its own, so the
boundary between prompt and response tokens is exact whatever the template does. Each item's
perplexity is exp(mean negative log-likelihood of its response tokens), computed per item in
length-sorted, right-padded batches (padding never changes a value: the attention is causal and
padded positions come last); the run's value is the geometric mean over items, so one rambling
item cannot dominate it.

The reward score is the scalar output of any ``AutoModelForSequenceClassification`` reward
model (Skywork-Reward, ArmoRM-style heads with one label; with two labels, the log-odds of the
second), scored by :mod:`generators.reward`, which the ``preference-pairs`` method shares.

torch and transformers are imported only when a metric runs.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Sequence
from typing import Any

from pydantic import Field

from datagen_core.errors import InputError, MissingDependencyError
from metrics.intrinsic import Metric, MetricConfig, MetricContext, MetricResult, mean_of

log = logging.getLogger("datagen.metrics")


class LocalModelConfig(MetricConfig):
    """``model``: a local folder, a hub id, or ``smollm2`` (the embedded model). Items beyond
    ``max_items`` are sampled (seeded). ``batch_size`` and ``device`` are operational."""

    model: str
    max_length: int = Field(1024, ge=8, description="tokens per item (prompt + response)")
    max_items: int | None = Field(None, ge=1)
    seed: int = 0
    batch_size: int = Field(4, ge=1)
    device: str | None = Field(None, description="cpu, cuda, ... (default: cuda if available)")

    operational = frozenset({"batch_size", "device"})


class PerplexityConfig(LocalModelConfig):
    model: str = "smollm2"


class RewardConfig(LocalModelConfig):
    max_length: int = Field(2048, ge=8)
    batch_size: int = Field(8, ge=1)


def _torch_transformers() -> tuple[Any, Any]:
    try:
        import torch
        import transformers
    except ImportError:
        raise MissingDependencyError("model-based metrics", "transformers", extra="local") from None
    if not log.isEnabledFor(logging.DEBUG):
        transformers.utils.logging.disable_progress_bar()
    return torch, transformers


def _device(torch: Any, wanted: str | None) -> str:
    return wanted or ("cuda" if torch.cuda.is_available() else "cpu")


def _sample(n: int, cap: int | None, seed: int) -> list[int]:
    if cap is None or n <= cap:
        return list(range(n))
    return sorted(random.Random(seed).sample(range(n), cap))


def _load_causal(name: str, device: str) -> tuple[Any, Any]:
    torch, transformers = _torch_transformers()
    from generators.backends.hf import resolve_model_path

    path = resolve_model_path(name)
    try:
        tok = transformers.AutoTokenizer.from_pretrained(path)
        model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    except (OSError, ValueError) as e:
        raise InputError(f"cannot load scoring LM {name!r}: {str(e).splitlines()[0]}") from None
    model.to(device).eval()
    return tok, model


# -- perplexity ------------------------------------------------------------------------------------
def encode_for_perplexity(tok: Any, instruction: str, response: str, max_length: int
                          ) -> tuple[list[int], int, str | None]:
    """(token ids, number of prompt tokens, note): prompt tokens then response tokens, cut to
    ``max_length`` (the prompt keeps at most half of it when it alone is too long)."""
    if getattr(tok, "chat_template", None):
        prompt = tok.apply_chat_template([{"role": "user", "content": instruction}],
                                         tokenize=False, add_generation_prompt=True)
        p = tok(prompt, add_special_tokens=False)["input_ids"]
    else:
        p = tok(instruction + "\n\n")["input_ids"]
    r = tok(response, add_special_tokens=False)["input_ids"]
    note = None
    if len(p) + len(r) > max_length:
        if len(p) > max_length // 2:
            p = p[-(max_length // 2):]
        r = r[: max_length - len(p)]
        note = f"truncated to {max_length} tokens"
    return list(p) + list(r), len(p), note


def response_nll(model: Any, batch: Sequence[tuple[list[int], int]], pad_id: int
                 ) -> list[list[float]]:
    """Per-token negative log-likelihoods of each item's response tokens, one forward pass for
    the whole (right-padded) batch; only the logits at response positions are materialised."""
    import torch

    device = next(model.parameters()).device
    width = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for b, (row, _) in enumerate(batch):
        ids[b, : len(row)] = torch.tensor(row)
        mask[b, : len(row)] = 1
    # logits at position t predict token t + 1: keep positions from the first response token's
    # predecessor (the shortest prompt in the batch) to the second-to-last position.
    start = max(min(n_prompt for _, n_prompt in batch) - 1, 0)
    keep = torch.arange(start, width - 1)
    ids, mask = ids.to(device), mask.to(device)
    with torch.inference_mode():
        try:
            logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=keep.to(device)
                           ).logits
        except TypeError:  # an architecture without logits_to_keep: all positions
            logits = model(input_ids=ids, attention_mask=mask).logits[:, start: width - 1]
        out: list[list[float]] = []
        for b, (row, n_prompt) in enumerate(batch):
            lo, hi = n_prompt - 1 - start, len(row) - 1 - start
            targets = ids[b, n_prompt: len(row)]
            nll = torch.nn.functional.cross_entropy(logits[b, lo:hi].float(), targets,
                                                    reduction="none")
            out.append(nll.tolist())
    return out


class PerplexityMetric(Metric):
    name = "perplexity"
    version = "1"
    outputs = ("perplexity",)
    Config = PerplexityConfig
    config: PerplexityConfig

    def compute(self, ctx: MetricContext) -> MetricResult:
        torch, _ = _torch_transformers()
        cfg = self.config
        data = ctx.data()
        chosen = _sample(len(data), cfg.max_items, cfg.seed)
        tok, model = _load_causal(cfg.model, _device(torch, cfg.device))
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
        encoded: dict[int, tuple[list[int], int, str | None]] = {}
        rows: list[tuple[int, float | None, str | None]] = []
        for i in chosen:
            ids, n_prompt, note = encode_for_perplexity(
                tok, data.instructions[i], data.responses[i], cfg.max_length)
            if n_prompt >= len(ids):
                rows.append((data.idx[i], None, "empty response"))
            else:
                encoded[i] = (ids, n_prompt, note)
        order = sorted(encoded, key=lambda i: len(encoded[i][0]))
        for s in range(0, len(order), cfg.batch_size):
            part = order[s: s + cfg.batch_size]
            nlls = response_nll(model, [encoded[i][:2] for i in part], pad_id)
            for i, nll in zip(part, nlls):
                rows.append((data.idx[i], math.exp(sum(nll) / len(nll)), encoded[i][2]))
        rows.sort()
        logs = [math.log(v) for _, v, _ in rows if v is not None]
        value = math.exp(sum(logs) / len(logs)) if logs else None
        return MetricResult(values={"perplexity": (value, len(logs))},
                            items={"perplexity": rows},
                            details={"model": cfg.model, "items": len(chosen)})


# -- reward model ----------------------------------------------------------------------------------
class RewardMetric(Metric):
    name = "reward"
    version = "1"
    outputs = ("reward",)
    Config = RewardConfig
    config: RewardConfig

    def compute(self, ctx: MetricContext) -> MetricResult:
        from generators.reward import load_reward_model

        cfg = self.config
        data = ctx.data()
        chosen = _sample(len(data), cfg.max_items, cfg.seed)
        rm = load_reward_model(cfg.model, device=cfg.device)
        scores = rm.score([[{"role": "user", "content": data.instructions[i]},
                            {"role": "assistant", "content": data.responses[i]}]
                           for i in chosen], max_length=cfg.max_length, batch_size=cfg.batch_size)
        rows: list[tuple[int, float | None, str | None]] = [
            (data.idx[i], s, None) for i, s in zip(chosen, scores)]
        return MetricResult(values={"reward": mean_of(scores)}, items={"reward": rows},
                            details={"model": cfg.model, "items": len(chosen)})
