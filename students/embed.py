"""Text embeddings from a student's own base model: RDS+ representations.

RDS+ (Ivison et al. 2025, "Large-Scale Data Selection for Instruction Tuning", arXiv 2503.01807,
code github.com/hamishivi/automated-instruction-selection ``compute_influence_cosinesim.py``)
represents a row by the *last* hidden layer of the pretrained model that is about to be
fine-tuned, pooled with position weights: token t of an L-token text gets weight
t / (1 + 2 + ... + L) (SGPT's weighted mean, Muennighoff 2022), so later tokens, which have
attended to more of the text, count more. The vector is L2-normalised, so a dot product is the
cosine similarity. The paper found this beat gradient-, loss- and embedding-model-based
selection while costing one forward pass per row; here the base model is the student's
(``smollm2`` by default, the embedded SmolLM2-135M, on a CPU offline).

A chat row is written as the released code writes it before tokenising: ``<|user|>``,
``<|assistant|>`` (and ``<|system|>``) tags, each followed by a newline and the message, the
assistant turn ending in the tokenizer's eos (:func:`chat_text`), and cut at ``max_length``
tokens (the code's 2,048 for training rows). Batches are right-padded and the weights are zero
on padding, so a row's vector does not depend on its batch (the paper's runs used batch 1).

torch and transformers are imported inside functions only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from datagen_core.errors import BackendError, ConfigError

log = logging.getLogger("datagen.embed")

DEFAULT_EMBEDDER = "smollm2"
DEFAULT_MAX_LENGTH = 2048
_TAGS = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>"}


def chat_text(messages: Sequence[dict[str, Any]], eos: str = "") -> str:
    """A chat row as one text in the released RDS+ code's format (role tags, eos after each
    assistant turn)."""
    parts = []
    for m in messages:
        tag = _TAGS.get(str(m.get("role")), f"<|{m.get('role')}|>")
        end = eos if m.get("role") == "assistant" else ""
        parts.append(f"{tag}\n{str(m.get('content', '')).strip()}{end}\n")
    return "".join(parts)


def model_fingerprint(model: str) -> str:
    """What identifies an embedder's vectors: the alias or hub id, plus for a local folder the
    content of its config, tokenizer and weight files (retraining a folder in place changes
    it; renaming it does not)."""
    from datagen_core.fingerprint import file_fingerprint, stable_hash

    path = Path(resolve_embedder(model))
    if not path.is_dir():
        return stable_hash({"model": model})
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in
                   (".json", ".safetensors", ".bin", ".model", ".txt"))
    return stable_hash({"files": {p.name: file_fingerprint(str(p)) for p in files}})


def resolve_embedder(model: str) -> str:
    """The folder or hub id to load for ``model``; ``scratch`` is refused (a randomly
    initialised model has no representation worth selecting by)."""
    from students.recipes import SCRATCH

    if model.strip() == SCRATCH:
        raise ConfigError("a scratch base has no pretrained representation to select by: "
                          f"embed with --model {DEFAULT_EMBEDDER} (or another pretrained model)")
    from generators.backends.hf import resolve_model_path

    return resolve_model_path(model)


class Embedder:
    """A pretrained LM turned into a batch embedder (weighted mean of its last hidden layer)."""

    def __init__(self, model: str = DEFAULT_EMBEDDER, *, max_length: int = DEFAULT_MAX_LENGTH,
                 batch_size: int = 16, threads: int | None = None) -> None:
        if max_length < 8 or batch_size < 1:
            raise ConfigError(f"embedder: max_length must be >= 8 and batch_size >= 1, got "
                              f"{max_length} and {batch_size}")
        self.name, self.max_length, self.batch_size = model, max_length, batch_size
        self.threads = threads
        self._model: Any = None
        self._tok: Any = None

    def _load_tokenizer(self) -> Any:
        if self._tok is None:
            try:
                import transformers
            except ImportError:
                from datagen_core.errors import MissingDependencyError

                raise MissingDependencyError("embedding", "transformers", extra="local") from None
            if not log.isEnabledFor(logging.DEBUG):
                transformers.utils.logging.disable_progress_bar()
            path = resolve_embedder(self.name)
            try:
                tok = transformers.AutoTokenizer.from_pretrained(path)
            except (OSError, ValueError) as e:
                raise BackendError(f"embedder {self.name!r}: cannot load {path!r}: {e}") from None
            tok.padding_side = "right"
            if tok.pad_token is None:
                tok.pad_token = tok.eos_token or tok.unk_token
            self._tok = tok
        return self._tok

    def _load(self) -> None:
        """The model, only when something is to be embedded (a fully cached selection needs
        the tokenizer's eos and nothing else)."""
        if self._model is not None:
            return
        self._load_tokenizer()  # also the one clear line when transformers is missing
        import torch
        import transformers

        if self.threads:
            torch.set_num_threads(self.threads)
        path = resolve_embedder(self.name)
        try:
            # the causal LM's trunk: its last hidden layer, without computing the LM head
            self._model = transformers.AutoModelForCausalLM.from_pretrained(
                path, dtype=torch.float32).base_model
        except (OSError, ValueError) as e:
            raise BackendError(f"embedder {self.name!r}: cannot load {path!r}: {e}") from None
        self._model.eval()

    @property
    def eos(self) -> str:
        return str(self._load_tokenizer().eos_token or "")

    def embed(self, texts: Sequence[str],
              progress: Callable[[int], None] | None = None) -> Any:
        """An (n, d) float32 array of unit vectors, in the order of ``texts``; ``progress(k)``
        is called after each batch with the rows done so far."""
        import numpy as np
        import torch

        self._load()
        out: list[Any] = []
        # longest first: batches of similar length waste little compute on padding
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            enc = self._tok([texts[i] for i in idx], return_tensors="pt", padding=True,
                            truncation=True, max_length=self.max_length)
            with torch.no_grad():
                hidden = self._model(input_ids=enc["input_ids"],
                                     attention_mask=enc["attention_mask"]).last_hidden_state
            out.append(weighted_mean(hidden, enc["attention_mask"]))
            if progress is not None:
                progress(min(start + self.batch_size, len(order)))
        if not out:
            return np.zeros((0, 0), dtype=np.float32)
        vectors = np.concatenate(out)
        result = np.empty_like(vectors)
        result[np.asarray(order)] = vectors
        return result


def weighted_mean(hidden: Any, mask: Any) -> Any:
    """Position-weighted mean over real tokens (weights 1..L_i on a right-padded row, 0 on
    padding, normalised to sum 1), L2-normalised: an (n, d) float32 numpy array."""
    import torch

    mask = mask.to(hidden.dtype)
    weights = torch.cumsum(mask, dim=1) * mask
    weights = weights / weights.sum(dim=1, keepdim=True).clamp(min=1.0)
    pooled = (hidden * weights.unsqueeze(-1)).sum(dim=1)
    pooled = pooled / torch.linalg.vector_norm(pooled, dim=1, keepdim=True).clamp(min=1e-12)
    return pooled.float().numpy()
