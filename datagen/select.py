"""``datagen select``: choose k training rows from runs (or any data set) for a target set.

The selection is itself a run (method ``select``): its id fingerprints the pool (the parent run
ids, or data sets' contents), the method and its arguments, the target set's content and the
embedding model's files, and it writes what any run writes (``run.json`` recording its
``parents``, ``data.parquet``, ``data.jsonl``), so ``datagen runs``, ``export`` and ``train``
work on it unchanged. The same selection twice is the same run and is found, not redone.

Methods: ``rds`` (RDS+, :mod:`students.selection` and :mod:`students.embed`: the student's base
model embeds every pool and target row, the target items take turns taking their most similar
rows) and ``random`` (the paper's baseline, and the matched-budget control of a suite). Each
row's vector is cached in the workspace under a fingerprint of (model, max length, text)
(:mod:`metrics.embedding_cache`), so re-selecting, or selecting from a pool that grew, embeds
only rows never seen by that model.

A target is a data set (a file, ``hf://...``, ``builtin:NAME``: its rows' chats, or
instructions) or ``task:NAME``, the prompts of an evaluation task's last ``target_n`` items,
away from the first-N slice an evaluation with ``--limit``/``eval_limit`` scores (the paper
targets each task's few-shot or dev examples, not its test items). Several targets make the
turns go to targets rather than items (the paper's multi-task round-robin).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from datagen_core.errors import ConfigError, InputError
from datagen_core.fingerprint import fingerprint, stable_hash
from datagen_core.records import GeneratorSpec, Instance, Message, RunManifest, SourceSpec
from datagen_core.workspace import Workspace

log = logging.getLogger("datagen.select")
SELECT_VERSION = "1"
TASK_PREFIX = "task:"
_EMBED_BLOCK = 256  # rows embedded between cache writes: a killed selection keeps its work


class SelectConfig(BaseModel):
    """How to select: also a suite's ``select:`` block (then ``k`` is the matched budget)."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["rds", "random"] = "rds"
    k: int = Field(ge=1, description="rows to select")
    target: list[str] = Field(default_factory=list, description="target sets (rds): data sets "
                              "or task:NAME; several make a multi-task round-robin")
    model: str = Field("smollm2", description="embedding model: the student's base model")
    max_length: int = Field(2048, ge=8, description="tokens embedded per row (the paper's code "
                            "cuts training rows at 2,048)")
    target_n: int = Field(32, ge=1, description="items of a task:NAME target, from its end")
    seed: int = Field(0, description="random: the draw")
    batch_size: int = Field(16, ge=1, description="rows per forward pass (operational)")

    @model_validator(mode="before")
    @classmethod
    def _one_target(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("target"), str):
            data = {**data, "target": [data["target"]]}
        return data

    def id_args(self, model_fp: str | None, target_fps: list[str]) -> dict[str, Any]:
        """What changes the selected rows (defaults left out, so new fields keep old ids)."""
        args: dict[str, Any] = {"method": self.method, "k": self.k}
        if self.method == "rds":
            args.update(targets=target_fps, model=model_fp)
            if self.max_length != 2048:
                args["max_length"] = self.max_length
        else:
            args["seed"] = self.seed
        return args


def select_config(**kw: Any) -> SelectConfig:
    try:
        return SelectConfig(**{k: v for k, v in kw.items() if v is not None})
    except ValidationError as e:
        from datagen_core.records import validation_message

        raise ConfigError(f"select: {validation_message(e)}") from None


@dataclass
class PoolRow:
    messages: list[dict[str, Any]]
    instance_id: str
    parent: str  # run id or data set uri
    index: int
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class SelectResult:
    run_id: str
    run_dir: Path
    parents: list[str]
    n_pool: int
    k: int
    method: str
    reused: bool = False
    embedded: int = 0  # rows embedded now
    cached: int = 0  # rows whose vectors came from the cache
    seconds: float = 0.0
    picks: list[Any] = field(default_factory=list)

    @property
    def data_path(self) -> Path:
        return self.run_dir / "data.parquet"


def load_pool(sources: list[str], ws: Workspace) -> tuple[list[PoolRow], list[str],
                                                         list[RunManifest]]:
    """Rows of every source (a run id or prefix, else a data set), their parent ids and the
    parent runs' manifests."""
    from datagen_core.sources import load_rows
    from metrics.store import Store

    if not sources:
        raise ConfigError("name at least one run (or data set) to select from")
    rows: list[PoolRow] = []
    parents: list[str] = []
    manifests: list[RunManifest] = []
    for src in sources:
        if _is_dataset(src):
            data, spec = load_rows(src)
            parents.append(f"{src}#{spec.fingerprint}")
            rows += [PoolRow(_messages(r, src, i), str(r.get("id", i)), src, i)
                     for i, r in enumerate(data)]
            continue
        if not ws.db_path.exists():
            raise InputError(f"no run or data set {src!r}: no workspace at {ws.root} and no "
                             "such file")
        store = Store(ws.db_path)
        rid = store.resolve_run(src)
        manifest = RunManifest.model_validate_json((ws.run_dir(rid) / "run.json").read_bytes())
        parents.append(rid)
        manifests.append(manifest)
        rows += [PoolRow(r["messages"], r["instance_id"], rid, int(r["index"]), r["meta"])
                 for r in store.instance_rows(rid)]
    if len(set(parents)) != len(parents):
        raise ConfigError("a run or data set is named twice: each row would be in the pool twice")
    return rows, parents, manifests


def _is_dataset(src: str) -> bool:
    return src.startswith(("hf://", "builtin:")) or Path(src).expanduser().exists()


def _messages(row: dict[str, Any], where: str, i: int,
              need_response: bool = True) -> list[dict[str, Any]]:
    if isinstance(row.get("messages"), list):
        return [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
    ins = next((row[c] for c in ("instruction", "prompt", "question", "input") if row.get(c)),
               None)
    res = next((row[c] for c in ("response", "output", "answer", "completion") if row.get(c)),
               None)
    if ins is None or (need_response and res is None):
        raise InputError(f"{where}: row {i} has neither `messages` nor instruction and response "
                         "columns (instruction/prompt/question, response/output/answer)")
    out = [{"role": "user", "content": str(ins)}]
    return out + ([{"role": "assistant", "content": str(res)}] if res is not None else [])


def load_targets(cfg: SelectConfig) -> tuple[list[list[dict[str, Any]]], list[int], list[str]]:
    """Target chats, each one's group (its target set) and each set's content fingerprint."""
    from datagen_core.sources import load_rows

    chats: list[list[dict[str, Any]]] = []
    groups: list[int] = []
    fps: list[str] = []
    for g, uri in enumerate(cfg.target):
        if uri.startswith(TASK_PREFIX):
            from students.tasks.base import get_task

            items, spec = get_task(uri[len(TASK_PREFIX):]).load()
            items = items[-cfg.target_n:]
            found = [[{"role": "user", "content": it.prompt}] for it in items]
            fps.append(stable_hash({"task": uri, "data": spec.fingerprint,
                                    "n": cfg.target_n}))
        else:
            rows, spec = load_rows(uri)
            found = [_messages(r, uri, i, need_response=False) for i, r in enumerate(rows)]
            fps.append(stable_hash({"uri": uri, "data": spec.fingerprint}))
        if not found:
            raise InputError(f"target {uri} has no rows")
        chats += found
        groups += [g] * len(found)
    return chats, groups, fps


def plan_selection(sources: list[str], cfg: SelectConfig, ws: Workspace) -> tuple[
        str, list[PoolRow], list[str], list[RunManifest], Any]:
    """The selection's run id (nothing embedded yet) and what it needs."""
    from students.embed import model_fingerprint

    if cfg.method == "rds" and not cfg.target:
        raise ConfigError("select: rds needs a target set: --target FILE or task:NAME")
    pool, parents, manifests = load_pool(sources, ws)
    if cfg.k > len(pool):
        raise ConfigError(f"cannot select k={cfg.k} rows from a pool of {len(pool)}: lower -k "
                          "or add runs")
    targets = load_targets(cfg) if cfg.method == "rds" else ([], [], [])
    model_fp = model_fingerprint(cfg.model) if cfg.method == "rds" else None
    run_id = fingerprint(stable_hash(sorted(parents)), "select", SELECT_VERSION,
                         cfg.id_args(model_fp, targets[2]))
    return run_id, pool, parents, manifests, (targets, model_fp)


async def aselect(sources: list[str], cfg: SelectConfig | None = None, *,
                  workspace: str | Path | None = None, **kw: Any) -> SelectResult:
    """Select ``cfg.k`` rows from ``sources`` (run ids, prefixes or data sets) and write them
    as a new run; keyword arguments build the config (``k=100, target="task:gsm8k"``)."""
    import asyncio

    cfg = cfg or select_config(**kw)
    ws = Workspace.resolve(workspace).ensure()
    return await asyncio.to_thread(_select, sources, cfg, ws)  # embedding blocks on torch


def _select(sources: list[str], cfg: SelectConfig, ws: Workspace) -> SelectResult:
    from datagen_core.workspace import run_lock
    from metrics.store import Store

    t0 = time.monotonic()
    run_id, pool, parents, manifests, (targets, model_fp) = plan_selection(sources, cfg, ws)
    store = Store(ws.db_path)
    run_dir = ws.run_dir(run_id)
    state = store.run_state(run_id)
    if state and state[0] == "finished" and (run_dir / "data.parquet").exists():
        return SelectResult(run_id, run_dir, parents, len(pool), cfg.k, cfg.method, reused=True,
                            seconds=time.monotonic() - t0)
    run_dir.mkdir(parents=True, exist_ok=True)
    with run_lock(run_dir):
        result = SelectResult(run_id, run_dir, parents, len(pool), cfg.k, cfg.method)
        if cfg.method == "random":
            from students.selection import random_select

            picks = random_select(len(pool), cfg.k, cfg.seed)
        else:
            from students.embed import Embedder, chat_text
            from students.selection import rds_select

            embedder = Embedder(cfg.model, max_length=cfg.max_length, batch_size=cfg.batch_size)
            eos = embedder.eos
            pool_vecs = _embed([chat_text(r.messages, eos) for r in pool], embedder, model_fp,
                               store, result)
            chats, groups, _ = targets
            target_vecs = _embed([chat_text(c, eos) for c in chats], embedder, model_fp,
                                 store, result)
            picks = rds_select(pool_vecs, target_vecs, cfg.k,
                               groups if len(cfg.target) > 1 else None)
        result.picks = picks
        _write(result, cfg, pool, parents, manifests, store)
    result.seconds = time.monotonic() - t0
    return result


def _embed(texts: list[str], embedder: Any, model_fp: str | None, store: Any,
           result: SelectResult) -> Any:
    """Vectors for ``texts``, from the cache where it has them; new ones are cached."""
    import numpy as np

    from metrics.embedding_cache import read_embeddings, write_embeddings

    keys = [stable_hash({"model": model_fp, "max_length": embedder.max_length, "text": t})
            for t in texts]
    cached = read_embeddings(store, keys)
    missing = sorted({k: i for i, k in enumerate(keys) if k not in cached}.values())
    result.cached += len(keys) - len(missing)
    for start in range(0, len(missing), _EMBED_BLOCK):
        block = missing[start:start + _EMBED_BLOCK]
        vecs = embedder.embed([texts[i] for i in block])
        write_embeddings(store, [keys[i] for i in block], vecs)
        cached.update({keys[i]: v for i, v in zip(block, vecs)})
        result.embedded += len(block)
        log.info("embedded %d of %d new rows", start + len(block), len(missing))
    return np.stack([cached[k] for k in keys]) if keys else np.zeros((0, 1), np.float32)


def _write(result: SelectResult, cfg: SelectConfig, pool: list[PoolRow], parents: list[str],
           manifests: list[RunManifest], store: Any) -> None:
    from datagen import __version__
    from datagen.run_files import write_data
    from metrics.store import run_decontaminated

    instances = []
    for rank, p in enumerate(result.picks):
        row = pool[p.index]
        instances.append(Instance(
            index=rank, instance_id=row.instance_id,
            messages=[Message(**m) for m in row.messages],
            meta={**row.meta, "selection": {"from": row.parent, "index": row.index,
                                            "score": p.score, "target": p.target,
                                            "round": p.round}}))
    gens = {stable_hash(m.generator.semantic()): m.generator for m in manifests}
    if len(gens) == 1 and len(manifests) == len(parents):
        g = next(iter(gens.values()))
        generator = g.model_copy(update={"name": f"{g.display}+{cfg.method}"})
    else:
        generator = GeneratorSpec(provider="select", model=cfg.method)
    domains = {m.domain for m in manifests}
    manifest = RunManifest(
        run_id=result.run_id, created_at=time.time(), generator=generator, method="select",
        method_version=SELECT_VERSION,
        method_args=cfg.model_dump(mode="json", exclude={"batch_size"}),
        domain=domains.pop() if len(domains) == 1 and len(manifests) == len(parents) else None,
        source=SourceSpec(uri=",".join(parents), rows=len(pool)), n=cfg.k,
        datagen_version=__version__, parents=parents)
    (result.run_dir / "run.json").write_text(manifest.model_dump_json(indent=2))
    write_data(result.run_dir, instances)
    store.write_instances(result.run_id, instances)
    parent_rows = [store.run_summary(p) for p in parents if not _is_dataset(p.split("#")[0])]
    clean = len(parent_rows) == len(parents) and all(
        run_decontaminated(r.get("curation")) for r in parent_rows)
    curation = {"decontaminated": clean, "selected_from": parents}
    if not clean:
        curation["skipped"] = "selected from rows not all checked against evaluation sets"
    store.upsert_run(
        manifest, "finished", n_requests=0, n_ok=0, n_failed=0, n_reused=0,
        n_instances=len(instances), n_valid=len(instances), n_pairs=0, prompt_tokens=0,
        # the pool's cost: its rows had to be generated to be selected from
        completion_tokens=0, cost_usd=sum(r.get("cost_usd") or 0.0 for r in parent_rows),
        curation=orjson.dumps(curation).decode())
