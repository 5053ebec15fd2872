"""Generation as a Ray Data pipeline: one run's requests answered by many replicas (CPUs, GPUs,
machines) instead of this process.

Only *where* requests are answered changes, so a Ray run is the same run as a plain one: the same
id (execution settings are operational and never enter it), folder, response log, DuckDB rows and
resume rule. :class:`RayDataEngine` is an :class:`~generators.engine.Engine` whose sending step
is a pipeline: the engine first drops what the run's log and the workspace cache already answer
(those are never sent again), then the missing requests go through Ray Data and every answer is
appended to the response log on this process as it comes back, so a killed Ray run resumes like
a killed plain one. A streaming run (:meth:`Engine.stream`) is sent in slices of ``slice_size``
requests, one pipeline each, so this process holds one slice at a time.

Two pipelines:

- ``map_batches`` (any backend; ``hf`` on CPU, ``vllm`` on GPU): the requests are cut into the
  same batches the plain engine would make (``limits.batch_size`` or the backend's default), a
  pool of ``replicas`` actors each builds the run's backend once and answers whole batches with
  an engine of its own (retries, timeouts, cost as in a plain run). Same batches and the same
  backend give the same rows as a plain run.
- Ray Data's LLM batch processor (``ray.data.llm``, vLLM engine replicas with tensor and
  pipeline parallelism and placement groups handled by Ray): the default for ``vllm:`` specs.
  The spec's ``options`` are vLLM's engine arguments, as for the in-process vllm backend.

Ray itself is imported only when a pipeline runs. ``address="local"`` starts a private local Ray
for the run (:func:`students.ray_jobs.local_ray`); ``"auto"`` joins the cluster started on this
machine (``ray start --head``); ``"ray://HOST:10001"`` connects through the Ray Client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import warnings
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from functools import partial
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from datagen_core.errors import BackendError, ConfigError, DatagenError, MissingDependencyError
from datagen_core.records import (
    ErrorInfo,
    GeneratorSpec,
    GenRequest,
    GenResponse,
    Usage,
    validation_message,
)
from generators.backends.base import Backend, check_spec
from generators.engine import Engine
from generators.keys import RequestKeys
from generators.progress import EngineStats, ProgressBar
from generators.response_log import LogIndex, ResponseLog

log = logging.getLogger("datagen.ray_data")

# A batch of a backend whose default is "everything in one call" (vLLM offline) would leave one
# replica with all the work and nothing in the log until the end.
MAX_DEFAULT_BATCH = 256
_LLM_DEFAULT_BATCH = 64
# Environment the replicas of a remote cluster need from this process (local Ray inherits it).
_PASS_ENV = ("DATAGEN_CACHE", "HF_HOME", "HF_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


class RayData(BaseModel):
    """Where and how wide a run's generation executes on Ray (operational: not in the run id)."""

    model_config = ConfigDict(extra="forbid")

    address: str = Field("local", description="'local' (a private Ray for this run), 'auto' "
                         "(the cluster on this machine) or 'ray://HOST:10001' (Ray Client)")
    replicas: int = Field(1, ge=1, description="backend actors, or vLLM engine replicas, at once")
    cpus_per_replica: float = Field(1.0, ge=0)
    gpus_per_replica: float | None = Field(
        None, ge=0, description="default: tensor x pipeline parallel size for vllm, 1 for hf "
        "on cuda, else 0")
    batch_size: int | None = Field(
        None, ge=1, description="prompts per Ray batch (default: limits.batch_size, else the "
        f"backend's default up to {MAX_DEFAULT_BATCH}; {_LLM_DEFAULT_BATCH} for the vLLM "
        "processor)")
    llm_processor: bool | None = Field(
        None, description="use Ray Data's vLLM batch processor (default: for vllm specs)")
    accelerator_type: str | None = Field(None, description="e.g. H100 (vLLM processor only)")
    slice_size: int = Field(
        50_000, ge=1, description="a streaming run's requests per pipeline: what this process "
        "holds at once; each slice starts its replicas anew (a model load), so make it large "
        "where loading is slow")


def ray_data_config(value: RayData | dict[str, Any] | str | None,
                    spec: GeneratorSpec | None = None) -> RayData | None:
    """A :class:`RayData` from what a caller gives: a config, a dict of its fields, or just an
    address; None means a plain in-process run. With ``spec``, checked against it too, so a
    wrong setting fails before a run exists."""
    if value is None:
        return None
    if isinstance(value, str):
        value = {"address": value}
    try:
        cfg = value if isinstance(value, RayData) else RayData.model_validate(value)
    except ValidationError as e:
        raise ConfigError(f"ray: {validation_message(e)}") from None
    address = cfg.address.strip()
    if not address:
        raise ConfigError("ray: the address is empty: use local, auto or ray://HOST:10001")
    if address.startswith(("http://", "https://")):
        raise ConfigError(f"ray: {address} is a Jobs API address (what train and bench take); "
                          "a Ray Data run connects as a driver: ray://HEAD:10001, or auto on a "
                          "machine of the cluster")
    if spec is not None:
        from generators.backends.batch import BatchBackend

        if issubclass(check_spec(spec), BatchBackend):
            raise ConfigError(f"{spec.label} is a provider's batch API: it runs at the provider "
                              "and resumes from this run's folder; drop --ray-address")
        uses_llm_processor(spec, cfg)
    return cfg


def uses_llm_processor(spec: GeneratorSpec, cfg: RayData) -> bool:
    """Whether vLLM runs through Ray Data's processor (its replicas, parallelism and placement
    groups are Ray's, better kept than ours) rather than as a backend in map_batches."""
    if cfg.llm_processor is None:
        return spec.provider == "vllm"
    if cfg.llm_processor and spec.provider != "vllm":
        raise ConfigError(f"the Ray Data LLM processor runs vLLM; {spec.label} is not a vllm: "
                          "spec (drop llm_processor to answer with its backend)")
    return cfg.llm_processor


def batch_size_for(spec: GeneratorSpec, cfg: RayData) -> int:
    """Prompts per Ray batch: the plain engine's unit for this spec (so a Ray run makes the
    same batches, hence the same rows), capped for backends that batch a whole run at once."""
    if cfg.batch_size:
        return cfg.batch_size
    if spec.limits.batch_size:
        return spec.limits.batch_size
    return min(check_spec(spec).default_batch_size, MAX_DEFAULT_BATCH)


def _parallel_size(spec: GeneratorSpec) -> int:
    opts = spec.options
    return int(opts.get("tensor_parallel_size", 1)) * int(opts.get("pipeline_parallel_size", 1))


def gpus_per_replica(spec: GeneratorSpec, cfg: RayData) -> float:
    """GPUs a map_batches replica reserves: what its backend will use, so Ray packs replicas
    onto GPUs without two models fighting over one."""
    if cfg.gpus_per_replica is not None:
        return cfg.gpus_per_replica
    if spec.provider == "vllm":
        return float(_parallel_size(spec))
    if spec.provider == "hf" and str(spec.options.get("device", "")).startswith("cuda"):
        return 1.0
    return 0.0


def check_fits(spec: GeneratorSpec, cfg: RayData, have: dict[str, float]) -> None:
    """Fail at once, not wait forever, when one replica needs more than the Ray has."""
    gpus = float(_parallel_size(spec)) if uses_llm_processor(spec, cfg) else gpus_per_replica(
        spec, cfg)
    for name, want, key in (("CPUs", cfg.cpus_per_replica, "CPU"), ("GPUs", gpus, "GPU")):
        if want > have.get(key, 0.0):
            raise ConfigError(
                f"a replica of {spec.label} needs {want:g} {name}; this machine's Ray has "
                f"{have.get(key, 0.0):g}: give --ray-address of a cluster that has them, or "
                "lower the request (options.device, tensor_parallel_size, gpus_per_replica)")


# -- the engine ----------------------------------------------------------------------------------
class RayDataEngine(Engine):
    """An engine that answers through a Ray Data pipeline; see the module docstring.

    Nothing is loaded in this process: the backend is built in each replica (an injected
    backend instance is copied, unstarted, to every replica). Ray starts at the first request
    that has to be sent (a fully answered re-run never starts it) and stops at :meth:`aclose`.
    """

    def __init__(self, spec: GeneratorSpec, *, ray: RayData, backend: Backend | None = None,
                 **kwargs: Any) -> None:
        super().__init__(spec, backend=backend, **kwargs)
        self.ray = ray
        self._injected = backend is not None
        self._session: contextlib.ExitStack | None = None

    async def start(self) -> None:
        """The backend starts in the replicas, not here; only its price is needed here."""
        if not self._started:
            self._price = self.backend.price()
            self._started = True

    async def aclose(self) -> None:
        self._started = False
        if self._session is not None:
            session, self._session = self._session, None
            session.close()

    def _ray(self) -> Any:
        if self._session is None:
            stack = contextlib.ExitStack()
            stack.enter_context(ray_session(self.ray.address))
            self._session = stack
        return _import_ray()

    async def stream(
        self, requests: Iterable[GenRequest] | AsyncIterable[GenRequest], *,
        window: int | None = None, total: int | None = None,
    ) -> AsyncIterator[tuple[GenRequest, GenResponse]]:
        """:meth:`Engine.stream` through Ray: ``(request, response)`` in input order, memory
        bounded by ``ray.slice_size`` requests (``window`` is the in-process engine's and does
        not apply). Each slice's answers are looked up in the log index and the cache first;
        only the rest goes through one pipeline, written to the log as it comes back."""
        key_of = RequestKeys(self.spec)
        self.stats = stats = EngineStats()
        log_path = self.log_path
        index = LogIndex.build(log_path) if log_path is not None else None
        # every record written as it comes (no gathering): a slice's answers arrive in batches
        response_log = ResponseLog(log_path).open() if log_path is not None else None
        if index is not None:
            index.writer = response_log
        base = 0
        try:
            async for chunk in _slices(requests, self.ray.slice_size):
                keys = [key_of(r) for r in chunk]
                first: dict[str, int] = {}
                for i, k in enumerate(keys):
                    first.setdefault(k, i)
                stats.total += len(chunk)
                results: dict[str, GenResponse] = {}
                missing = []
                for k in first:
                    hit = index.get(k) if index is not None else None
                    if hit is None:
                        missing.append(k)
                    else:
                        results[k] = hit
                found: dict[str, GenResponse] = {}
                if missing and self.cache is not None:
                    found = await asyncio.to_thread(self.cache.get_many, missing)
                for k, resp in found.items():  # copied into this run's log: self-contained
                    results[k] = resp = resp.model_copy(update={"index": base + first[k]})
                    self._write(resp, response_log, index)
                stats.reused += len(results)
                todo = [(k, first[k]) for k in missing if k not in found]
                if todo:
                    await self._send(chunk, todo, results, response_log, index)
                for i, (r, k) in enumerate(zip(chunk, keys, strict=True)):
                    resp = results[k]
                    at = base + i
                    yield r, resp if resp.index == at else resp.model_copy(update={"index": at})
                base += len(chunk)
        finally:
            if response_log is not None:
                response_log.close()
            if index is not None:
                index.close()

    async def _send(self, requests: Any, todo: list[tuple[str, int]],
                    results: dict[str, GenResponse], response_log: ResponseLog | None,
                    index: LogIndex | None = None) -> None:
        bar = ProgressBar(self.description, len(results) + len(todo), len(results), self.progress)
        ray = self._ray()
        if self.ray.address == "local":  # no autoscaler: what is missing now never comes
            check_fits(self.spec, self.ray, ray.cluster_resources())
        _quiet_ray_data()
        with bar:
            if uses_llm_processor(self.spec, self.ray):
                rows = _llm_rows(self, requests, todo)
            else:
                rows = _batch_rows(self, requests, todo)
            for resp in rows:
                self._record(resp, results, response_log, index)
                bar.advance(self.stats)
                await asyncio.sleep(0)  # let the loop breathe between answers

    @staticmethod
    def _write(resp: GenResponse, response_log: ResponseLog | None,
               index: LogIndex | None) -> None:
        if response_log is not None:
            offset = response_log.write(resp)
            if index is not None and resp.ok:
                index.add(resp.key, offset)

    def _record(self, resp: GenResponse, results: dict[str, GenResponse],
                response_log: ResponseLog | None, index: LogIndex | None) -> None:
        stats = self.stats
        stats.sent += 1
        stats.attempts += resp.attempts
        if resp.error is None:
            stats.ok += 1
            stats.prompt_tokens += resp.usage.prompt_tokens
            stats.completion_tokens += resp.usage.completion_tokens
            stats.cost_usd += resp.cost_usd
        else:
            stats.failed += 1
            stats.errors[resp.error.type] = stats.errors.get(resp.error.type, 0) + 1
        results[resp.key] = resp
        self._write(resp, response_log, index)


async def _slices(requests: Iterable[GenRequest] | AsyncIterable[GenRequest], size: int
                  ) -> AsyncIterator[list[GenRequest]]:
    chunk: list[GenRequest] = []
    if isinstance(requests, AsyncIterable):
        async for r in requests:
            chunk.append(r)
            if len(chunk) >= size:
                yield chunk
                chunk = []
    else:
        for r in requests:
            chunk.append(r)
            if len(chunk) >= size:
                yield chunk
                chunk = []
    if chunk:
        yield chunk


def engine_for(ray: RayData | None) -> Callable[..., Engine]:
    """The engine class a run builds: the plain one, or this module's for a Ray run."""
    return Engine if ray is None else partial(RayDataEngine, ray=ray)


# -- map_batches: the run's backend in every replica ---------------------------------------------
class BatchAnswerer:
    """A Ray Data callable class: one per replica, holding the run's backend (built and started
    once, e.g. the model loaded once) and an engine that answers one batch per row."""

    def __init__(self, spec: GeneratorSpec, backend_blob: bytes | None) -> None:
        if backend_blob is not None:
            import cloudpickle

            backend: Backend | None = cloudpickle.loads(backend_blob)
        else:
            backend = None
        self.loop = asyncio.new_event_loop()
        self.engine = Engine(spec, backend=backend, progress=False)
        self.fatal: str | None = None
        try:
            self.loop.run_until_complete(self.engine.start())
        except DatagenError as e:  # a model that cannot load: said once, by the driver
            self.fatal = str(e)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {"batch": [], "responses": [], "fatal": []}
        for b, payload in zip(batch["batch"], batch["requests"], strict=True):
            out["batch"].append(int(b))
            if self.fatal is not None:
                out["responses"].append(b"[]")
                out["fatal"].append(self.fatal)
                continue
            reqs = [GenRequest.model_validate(r) for r in orjson.loads(payload)]
            try:
                answers = self.loop.run_until_complete(self.engine.generate(reqs))
            except DatagenError as e:  # fatal for the run: the driver stops it with this line
                out["responses"].append(b"[]")
                out["fatal"].append(str(e))
                continue
            out["responses"].append(orjson.dumps([a.model_dump(mode="json") for a in answers]))
            out["fatal"].append("")
        return out


def _batch_rows(engine: RayDataEngine, requests: Any, todo: list[tuple[str, int]]
                ) -> Iterator[GenResponse]:
    """Answers of ``todo`` from a map_batches pipeline, as they come back (any order)."""
    ray = _import_ray()
    spec, cfg = engine.spec, engine.ray
    size = batch_size_for(spec, cfg)
    units = [todo[i:i + size] for i in range(0, len(todo), size)]
    items = [{"batch": u, "requests": orjson.dumps(
        [requests[i].model_dump(mode="json", exclude_defaults=True) for _, i in unit])}
        for u, unit in enumerate(units)]
    blob = None
    if engine._injected:
        import cloudpickle

        blob = cloudpickle.dumps(engine.backend)
    # On a cluster a lost replica is restarted (nodes come and go); on this machine's private
    # Ray a dead replica means the machine is in trouble (out of memory): the run stops, its
    # log kept, instead of loading the model again (and Ray's warning about restarting actors
    # with constructor arguments in the object store stays out of the user's terminal).
    restarts = {"max_restarts": 0} if cfg.address == "local" else {}
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    with warnings.catch_warnings():  # max_restarts has no named parameter in Ray 2.60 yet
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*")
        ds = ds.map_batches(
            BatchAnswerer, fn_constructor_args=(spec, blob), batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=min(cfg.replicas, len(items))),
            num_cpus=cfg.cpus_per_replica, num_gpus=gpus_per_replica(spec, cfg) or None,
            **restarts,
        )
    for row in _rows(ds, cfg):
        if row["fatal"]:
            raise BackendError(row["fatal"])
        unit = units[int(row["batch"])]
        answers = orjson.loads(row["responses"])
        if len(answers) != len(unit):
            raise BackendError(f"Ray replica answered {len(answers)} of {len(unit)} requests")
        for (key, index), a in zip(unit, answers, strict=True):
            if a["key"] != key:  # the replica's spec hashes differently: a bug, never a guess
                raise BackendError(f"Ray replica keyed a request {a['key']}, expected {key}")
            a["index"] = index
            yield GenResponse.model_validate(a)


# -- Ray Data LLM: vLLM engine replicas ----------------------------------------------------------
def llm_processor_config(spec: GeneratorSpec, cfg: RayData) -> Any:
    """``ray.data.llm.vLLMEngineProcessorConfig`` for a vllm spec: the spec's options are vLLM
    engine arguments (``tensor_parallel_size``, ``max_model_len``, ...), ``replicas`` is the
    number of engine replicas, failed rows come back as errors instead of stopping the run."""
    llm = _import_ray_llm()
    engine_kwargs = {k: v for k, v in spec.options.items() if k != "model"}
    try:
        return llm.vLLMEngineProcessorConfig(
            model_source=spec.model, engine_kwargs=engine_kwargs, concurrency=cfg.replicas,
            batch_size=cfg.batch_size or spec.limits.batch_size or _LLM_DEFAULT_BATCH,
            accelerator_type=cfg.accelerator_type, should_continue_on_error=True,
            log_engine_metrics=False,
        )
    except ValueError as e:  # pydantic's ValidationError is one
        raise ConfigError(f"{spec.label}: Ray Data vLLM processor: {str(e).splitlines()[0]}"
                          ) from None


def llm_sampling(spec: GeneratorSpec, request: GenRequest) -> dict[str, Any]:
    """``vllm.SamplingParams`` fields for one request, as the processor takes them (a dict per
    row), the same settings the in-process vllm backend uses."""
    s = request.sampling or spec.sampling
    out: dict[str, Any] = {"temperature": s.temperature, "top_p": s.top_p,
                           "top_k": s.top_k if s.top_k is not None else -1,
                           "max_tokens": s.max_tokens, "seed": s.seed, "stop": list(s.stop or [])}
    if request.response_schema is not None:
        out["structured_outputs"] = {"json": orjson.dumps(request.response_schema).decode()}
    return out


def _llm_postprocess(row: dict[str, Any]) -> dict[str, Any]:
    """Only what becomes a GenResponse travels back (not token ids, not metrics)."""
    return {"key": row["key"], "index": row["index"], "max_tokens": row["max_tokens"],
            "text": row.get("generated_text", ""),
            "prompt_tokens": int(row.get("num_input_tokens") or 0),
            "completion_tokens": int(row.get("num_generated_tokens") or 0),
            "latency_s": float(row.get("time_taken_llm") or 0.0)}


def _llm_rows(engine: RayDataEngine, requests: Any, todo: list[tuple[str, int]]
              ) -> Iterator[GenResponse]:
    """Answers of ``todo`` from the vLLM processor, one row per request, as they come back.
    vLLM gives no finish reason there: it is inferred from ``max_tokens``."""
    ray = _import_ray()
    llm = _import_ray_llm()
    spec, cfg = engine.spec, engine.ray
    config = llm_processor_config(spec, cfg)
    items = []
    for key, i in todo:
        r = requests[i]
        sampling = llm_sampling(spec, r)
        items.append({"key": key, "index": i, "max_tokens": sampling["max_tokens"],
                      "messages": [{"role": m.role, "content": m.content} for m in r.messages],
                      "sampling_params": sampling})
    processor = llm.build_processor(config, postprocess=_llm_postprocess)
    ds = processor(ray.data.from_items(items))
    price = engine._price
    from generators.pricing import cost as cost_of

    for row in _rows(ds, cfg):
        error = row.get("__inference_error__") or ""
        if error:
            yield GenResponse(key=row["key"], index=int(row["index"]), created_at=time.time(),
                              error=ErrorInfo(kind="invalid", type="inference_error",
                                              message=str(error).splitlines()[0][:500]))
            continue
        usage = Usage(prompt_tokens=row["prompt_tokens"],
                      completion_tokens=row["completion_tokens"])
        latency = float(row["latency_s"])
        # vLLM answers many rows at once: a row is charged its share, as a saturated server is
        compute = latency / max(1, spec.limits.concurrency)
        finish = "length" if usage.completion_tokens >= int(row["max_tokens"]) else "stop"
        yield GenResponse(
            key=row["key"], index=int(row["index"]), text=row["text"], finish_reason=finish,
            usage=usage, latency_s=latency, model=spec.model, created_at=time.time(),
            cost_usd=0.0 if price is None else cost_of(price, usage, compute),
            raw={"finish_reason": finish, "executor": "ray-data-llm"},
        )


# -- Ray ----------------------------------------------------------------------------------------
def _rows(ds: Any, cfg: RayData) -> Iterator[dict[str, Any]]:
    """Rows of ``ds`` as they are produced; a Ray failure becomes one line."""
    try:
        yield from ds.iter_rows()
    except DatagenError:
        raise
    except Exception as e:  # RayTaskError, ActorDiedError, ...: the run stops, its log stays
        raise BackendError(f"Ray Data pipeline failed ({type(e).__name__}): "
                           f"{_first_line(e)}; run the same command again to resume") from None


def _first_line(e: BaseException) -> str:
    lines = [x for x in str(e).splitlines() if x.strip()]
    # a RayTaskError's message ends with the original exception's "Type: message" line
    return (lines[-1] if lines else type(e).__name__)[:300]


def _import_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError:
        raise MissingDependencyError("a Ray Data run", "ray", hint="pip install 'ray[data]'"
                                     ) from None
    return ray


def _import_ray_llm() -> Any:
    try:
        import ray.data.llm as llm
    except ImportError as e:
        raise MissingDependencyError("the Ray Data vLLM processor", e.name or "ray[llm]",
                                     hint="pip install 'ray[llm]' (it brings vllm)") from None
    return llm


def _quiet_ray_data() -> None:
    """Ray Data's progress bars and per-dataset logs would drown the run's own output."""
    ray = _import_ray()
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    if not log.isEnabledFor(logging.DEBUG):
        for name in ("ray.data", "ray.llm", "ray._private.worker"):
            logging.getLogger(name).setLevel(logging.ERROR)


def _probe(address: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds on a Ray Client address nothing listens at (the client itself retries
    for about 35 s before it gives up)."""
    if not address.startswith("ray://"):
        return
    from urllib.parse import urlsplit

    parts = urlsplit(address)
    host, port = parts.hostname or "127.0.0.1", parts.port or 10001
    with socket.create_connection((host, port), timeout=timeout_s):
        pass


@contextlib.contextmanager
def ray_session(address: str) -> Iterator[None]:
    """Ray for the block: a private local one (``local``), or a connection to ``address``; a Ray
    this process already joined is used as it is, and left running."""
    ray = _import_ray()
    if ray.is_initialized():
        yield
        return
    if address == "local":
        from students.ray_jobs import local_ray

        with local_ray():
            yield
        return
    env = {k: os.environ[k] for k in _PASS_ENV if k in os.environ}
    try:
        _probe(address)
        with warnings.catch_warnings():  # the client's "connection timed out" warning
            warnings.simplefilter("ignore")
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False,
                     runtime_env={"env_vars": env} if env else None)
    except Exception as e:  # ConnectionError, TimeoutError, ValueError, RuntimeError, ...
        raise ConfigError(
            f"cannot reach Ray at {address!r}: {_first_line(e)} (start one with `ray start "
            "--head`, give ray://HOST:10001, or use --ray-address local)") from None
    try:
        yield
    finally:
        ray.shutdown()
