"""vLLM's offline engine in this process (``vllm:MODEL``), for large local runs on a GPU.

The offline engine needs a CUDA GPU (the PyPI wheel is CUDA-only: ``pip install 'datagen[vllm]'``).
To use a vLLM *server* instead, point the OpenAI backend at it:
``openai:MODEL@http://host:8000/v1``.

vLLM is fastest when it sees every prompt at once (continuous batching schedules them itself), so
the backend is ``batched`` with an effectively unbounded batch: all prompts of a run go to ONE
``LLM.chat`` call, unless ``limits.batch_size`` asks for smaller chunks (which gives progress and
a resumable log sooner, at some throughput cost). Sampling is per request, so requests that
override the spec's sampling keep their own settings inside the one call.

``spec.options`` are passed to ``vllm.LLM(...)`` as is: ``tensor_parallel_size``, ``dtype``,
``max_model_len``, ``gpu_memory_utilization``, ``seed`` and so on. A ``response_schema`` becomes
structured output (``StructuredOutputsParams``; ``GuidedDecodingParams`` on older vLLM).
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import logging
from typing import Any

from datagen_core.errors import BackendError, MissingDependencyError
from datagen_core.records import ErrorInfo, GenRequest, SamplingParams
from generators.backends.base import Backend, Reply

log = logging.getLogger("datagen.vllm")


class VLLMBackend(Backend):
    name = "vllm"
    known_options = None  # passed to vllm.LLM as is
    batched = True
    default_batch_size = 1 << 30  # one LLM.chat call per run; limits.batch_size splits it

    _llm: Any = None
    _vllm: Any = None

    async def start(self) -> None:
        try:
            vllm = importlib.import_module("vllm")
        except ImportError:
            raise MissingDependencyError("the vllm backend", "vllm", extra="vllm") from None
        self._vllm = vllm
        options = {k: v for k, v in self.spec.options.items() if k != "model"}
        try:
            # Loading weights and capturing CUDA graphs takes minutes: keep the event loop free.
            self._llm = await asyncio.to_thread(vllm.LLM, model=self.spec.model, **options)
        except Exception as exc:
            raise BackendError(
                f"{self.spec.label}: vLLM could not load the model: {exc} (the offline engine "
                f"needs a CUDA GPU; check the model name and options such as "
                f"gpu_memory_utilization and max_model_len)"
            ) from exc

    async def close(self) -> None:
        if self._llm is None:
            return
        self._llm = None
        gc.collect()
        try:  # free GPU memory so another engine can load in the same process
            from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

            cleanup_dist_env_and_memory()
        except Exception:  # best effort: older (or fake) vLLM may lack it
            log.debug("vLLM cleanup skipped", exc_info=True)

    def sampling_params(self, request: GenRequest, sampling: SamplingParams) -> Any:
        """One ``vllm.SamplingParams`` for one request."""
        kwargs: dict[str, Any] = {
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "top_k": sampling.top_k if sampling.top_k is not None else -1,
            "max_tokens": sampling.max_tokens,
            "seed": sampling.seed,
        }
        if sampling.stop:
            kwargs["stop"] = list(sampling.stop)
        if request.response_schema is not None:
            kwargs.update(self._structured(request.response_schema))
        return self._vllm.SamplingParams(**kwargs)

    def _structured(self, schema: dict[str, Any]) -> dict[str, Any]:
        module = importlib.import_module("vllm.sampling_params")
        if hasattr(module, "StructuredOutputsParams"):  # newer vLLM
            return {"structured_outputs": module.StructuredOutputsParams(json=schema)}
        if hasattr(module, "GuidedDecodingParams"):
            return {"guided_decoding": module.GuidedDecodingParams(json=schema)}
        raise BackendError(
            f"{self.spec.label}: this vLLM has no structured output; upgrade vllm to use "
            f"response_schema"
        )

    async def complete_batch(
        self, requests: list[GenRequest], sampling: list[SamplingParams]
    ) -> list[Reply]:
        assert self._llm is not None, "backend not started"
        conversations = [
            [{"role": m.role, "content": m.content} for m in r.messages] for r in requests
        ]
        params = [self.sampling_params(r, s) for r, s in zip(requests, sampling, strict=True)]
        outputs = await asyncio.to_thread(
            self._llm.chat, conversations, sampling_params=params, use_tqdm=False
        )
        return [self._reply(o) for o in outputs]

    def _reply(self, output: Any) -> Reply:
        completion = output.outputs[0]
        return Reply(
            text=completion.text,
            finish_reason=completion.finish_reason,
            prompt_tokens=len(output.prompt_token_ids or ()),
            completion_tokens=len(completion.token_ids or ()),
            raw={
                "request_id": getattr(output, "request_id", None),
                "finish_reason": completion.finish_reason,
                "stop_reason": _jsonable(getattr(completion, "stop_reason", None)),
            },
            model=self.spec.model,
        )

    def classify(self, exc: BaseException) -> ErrorInfo:
        """Running out of GPU memory is not the prompts' fault and will not pass on retry: stop
        the run with a fix rather than record every prompt of the batch as invalid."""
        text = f"{type(exc).__name__}: {exc}"
        if "out of memory" in text.lower() or "OutOfMemory" in type(exc).__name__:
            return ErrorInfo(
                kind="fatal", type="out_of_memory",
                message=f"{self.spec.label}: GPU out of memory ({exc}); lower limits.batch_size, "
                        f"max_model_len or gpu_memory_utilization",
            )
        return super().classify(exc)


def _jsonable(value: Any) -> Any:
    return value if value is None or isinstance(value, (str, int, float)) else str(value)
