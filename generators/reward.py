"""Reward-model scoring: one scalar per (prompt, response) conversation from a sequence
classifier, as RewardBench and Tulu 3's reward models are used.

A reward model is any ``AutoModelForSequenceClassification`` folder or hub id with a scalar head
(one label: the reward; two labels: the log-odds of the second, "good", label). The conversation
is formatted with the model's own chat template (reward models are trained on templated text,
so an untemplated string would score something the model never saw); a tokenizer without a
template gets an (instruction, response) text pair, as cross-encoder reward models were trained.
Inputs are cut from the left to ``max_length`` tokens so the response's end, where the score is
read, survives. Scores are deterministic: evaluation mode, float32 by default, fixed batches.

This is not a generator backend (it returns numbers, not text), so it lives beside them; the
``reward`` metric and the ``preference-pairs`` method both use it. torch and transformers are
imported only when a model loads.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from datagen_core.errors import ConfigError, InputError, MissingDependencyError

log = logging.getLogger("datagen.reward")

#: a conversation: ``{"role": ..., "content": ...}`` turns, the response last
Conversation = Sequence[dict[str, str]]


def _torch_transformers(what: str) -> tuple[Any, Any]:
    try:
        import torch
        import transformers
    except ImportError:
        raise MissingDependencyError(what, "transformers", extra="local") from None
    if not log.isEnabledFor(logging.DEBUG):
        transformers.utils.logging.disable_progress_bar()
    return torch, transformers


@dataclass
class RewardModel:
    """A loaded reward model; :meth:`score` gives one reward per conversation."""

    name: str
    model: Any
    tokenizer: Any

    def score(self, conversations: Sequence[Conversation], *, max_length: int = 2048,
              batch_size: int = 8) -> list[float]:
        return reward_scores(self.model, self.tokenizer, conversations,
                             max_length=max_length, batch_size=batch_size)


def load_reward_model(name: str, *, device: str | None = None, dtype: str | None = None,
                      what: str = "reward model") -> RewardModel:
    """Load ``name`` (a local folder, a hub id, or ``smollm2``) for scoring.

    A tokenizer without a pad token pads with its eos (as TRL's RewardTrainer and RewardBench
    do), and the model is told which id that is: a sequence classifier reads its score at the
    last token that is not padding.
    """
    torch, transformers = _torch_transformers(what)
    from generators.backends.hf import resolve_model_path

    path = resolve_model_path(name)
    torch_dtype = getattr(torch, dtype) if dtype else torch.float32
    if not isinstance(torch_dtype, torch.dtype):
        raise ConfigError(f"{what}: unknown dtype {dtype!r} (float32, bfloat16, float16)")
    try:
        tok = transformers.AutoTokenizer.from_pretrained(path)
        model = transformers.AutoModelForSequenceClassification.from_pretrained(
            path, dtype=torch_dtype)
    except (OSError, ValueError) as e:
        raise InputError(f"cannot load {what} {name!r}: {str(e).splitlines()[0]}") from None
    labels = model.config.num_labels
    if labels not in (1, 2):
        raise ConfigError(f"{what} {name!r} has {labels} labels: expected a scalar head "
                          "(1 label) or good/bad (2)")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    model.config.pad_token_id = tok.pad_token_id
    tok.padding_side = "right"
    tok.truncation_side = "left"  # keep the response's end, where the score is read
    model.to(device or ("cuda" if torch.cuda.is_available() else "cpu")).eval()
    return RewardModel(name=name, model=model, tokenizer=tok)


def reward_scores(model: Any, tok: Any, conversations: Sequence[Conversation], *,
                  max_length: int, batch_size: int) -> list[float]:
    """One scalar per conversation, batched, in input order."""
    import torch

    device = next(model.parameters()).device
    templated = bool(getattr(tok, "chat_template", None))
    accepted = set(inspect.signature(model.forward).parameters)
    out: list[float] = []
    for s in range(0, len(conversations), batch_size):
        part = [[{"role": m["role"], "content": m["content"]} for m in c]
                for c in conversations[s: s + batch_size]]
        if templated:
            texts = [tok.apply_chat_template(c, tokenize=False) for c in part]
            enc = tok(texts, add_special_tokens=False, padding=True, truncation=True,
                      max_length=max_length, return_tensors="pt")
        else:
            enc = tok(["\n\n".join(m["content"] for m in c[:-1]) for c in part],
                      [c[-1]["content"] for c in part], padding=True, truncation=True,
                      max_length=max_length, return_tensors="pt")
        inputs = {k: v.to(device) for k, v in enc.items() if k in accepted}
        with torch.inference_mode():
            logits = model(**inputs).logits.float()
        vals = logits[:, 0] if logits.shape[1] == 1 else logits[:, 1] - logits[:, 0]
        out.extend(float(v) for v in vals.tolist())
    return out
