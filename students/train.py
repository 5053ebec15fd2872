"""Train one student in this process: the function every Ray task and Ray job runs.

``train_student(recipe, data, workspace)`` loads the data (SFT: chat ``messages`` rows from a
run's ``data.parquet`` or any JSONL/Parquet; DPO: ``prompt``/``chosen``/``rejected`` rows from a
run's ``pairs.jsonl``), builds the base model and tokenizer, trains with TRL, and saves

    students/<student_id>/
        student.json    the manifest (StudentRecord), status "finished"
        model/          final weights + tokenizer (LoRA merged in), loads with AutoModelForCausalLM
        adapter/        the LoRA adapter alone (LoRA recipes only)
        metrics.jsonl   trainer.state.log_history, one entry per line, appended while training
        loss.json       the loss curve: [{"step", "epoch", "loss"}]

The student id is a fingerprint of (training data, base model, semantic recipe), so the same
request twice is the same student; a finished student is returned without training. Everything is
written into a temporary folder beside the final one and renamed at the end, so a killed training
never looks finished, and two processes racing on one student both end with the same result.

This module touches files only, never the database: tasks train in parallel processes, and the
driver (:mod:`datagen.training`) records results in the store.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import orjson

from datagen_core.errors import ConfigError, InputError, MissingDependencyError
from datagen_core.fingerprint import file_fingerprint, fingerprint
from datagen_core.workspace import Workspace
from students.recipes import Recipe, load_recipe
from students.records import DataRef, StudentRecord

log = logging.getLogger("datagen.students")

STUDENT_VERSION = "1"
_STALE_TMP_S = 6 * 3600.0  # a temp folder this old is a killed training, not one in progress


def student_id(recipe: Recipe, data: DataRef) -> str:
    """fingerprint(data run id or content hash, student@version, base model + semantic recipe)."""
    return fingerprint(data.parent, "student", STUDENT_VERSION,
                       {"base_model": recipe.base_model, "recipe": recipe.semantic()})


def _run_id(workspace: Workspace, prefix: str) -> str:
    """A run id from a unique prefix, by the run folders (training needs no database)."""
    ids = sorted(p.name for p in workspace.runs_dir.glob(f"{glob.escape(prefix)}*") if p.is_dir())
    if not prefix or not ids:
        raise InputError(f"no such run or file: {prefix} (see `datagen runs`)")
    if len(ids) > 1:
        raise InputError(f"run id {prefix!r} is ambiguous ({len(ids)} runs): give more of it")
    return ids[0]


def resolve_data(data: str | Path | DataRef, kind: Literal["sft", "dpo"],
                 workspace: Workspace) -> DataRef:
    """A training file from a path, or from a run id (or unique prefix) in the workspace."""
    if isinstance(data, DataRef):
        if data.kind != kind:
            raise ConfigError(f"a {kind} recipe cannot train on {data.kind} data ({data.path})")
        return data
    path = Path(data).expanduser()
    if path.is_file():
        return DataRef(path=str(path.resolve()), fingerprint=file_fingerprint(str(path)),
                       kind=kind)
    if not workspace.db_path.exists() or os.sep in str(data):
        raise InputError(f"no such run or file: {data} (see `datagen runs`)")
    run_id = _run_id(workspace, str(data))
    name = "pairs.jsonl" if kind == "dpo" else "data.parquet"
    file = workspace.run_dir(run_id) / name
    if not file.is_file():
        what = "preference pairs (a pairs method such as attribute-variants)" if kind == "dpo" \
            else "SFT rows (it has not finished?)"
        raise InputError(f"run {run_id} has no {name}: a {kind} student needs {what}")
    return DataRef(path=str(file), fingerprint=file_fingerprint(str(file)), run_id=run_id,
                   kind=kind)


def read_manifest(workspace: Workspace, sid: str) -> StudentRecord | None:
    path = workspace.students_dir / sid / "student.json"
    if not path.is_file():
        return None
    try:
        return StudentRecord.model_validate_json(path.read_bytes())
    except ValueError:
        return None


def train_student(recipe: Recipe | str | dict[str, Any], data: str | Path | DataRef,
                  workspace: Workspace | str | Path | None = None) -> StudentRecord:
    """Train (or return the already finished) student of ``recipe`` on ``data``."""
    ws = workspace if isinstance(workspace, Workspace) else Workspace.resolve(workspace)
    ws.ensure()
    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    ref = resolve_data(data, recipe.kind, ws)
    sid = student_id(recipe, ref)
    done = read_manifest(ws, sid)
    if done is not None and done.status == "finished":
        return done
    _clean_stale(ws)
    final = ws.students_dir / sid
    tmp = Path(tempfile.mkdtemp(prefix=f".{sid}.tmp-", dir=ws.students_dir))
    now = time.time()
    rec = StudentRecord(student_id=sid, status="running", recipe=recipe, data=ref,
                        created_at=now, started_at=now, path=str(final / "model"))
    try:
        _write_manifest(tmp, rec)
        rec = _train(recipe, ref, tmp, rec)
        _write_manifest(tmp, rec)
        return _publish(tmp, final, rec)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _publish(tmp: Path, final: Path, rec: StudentRecord) -> StudentRecord:
    """Rename the finished temp folder into place; a finished copy already there wins."""
    for _ in range(2):
        try:
            os.rename(tmp, final)
            return rec
        except OSError:
            other = read_manifest(Workspace(final.parent.parent), rec.student_id)
            if other is not None and other.status == "finished":
                return other
            shutil.rmtree(final, ignore_errors=True)  # leftovers of something never finished
    raise OSError(f"cannot move the trained student into {final}")


def _write_manifest(folder: Path, rec: StudentRecord) -> None:
    tmp = folder / "student.json.tmp"
    tmp.write_text(rec.model_dump_json(indent=2))
    tmp.replace(folder / "student.json")


def _clean_stale(ws: Workspace) -> None:
    """Remove temp folders of killed trainings. A live training appends to its metrics.jsonl at
    every log step, so the newest file time inside a folder tells live from dead."""
    for old in ws.students_dir.glob(".*.tmp-*"):
        try:
            newest = max([old.stat().st_mtime, *(f.stat().st_mtime for f in old.iterdir())])
        except OSError:
            continue
        if time.time() - newest > _STALE_TMP_S:
            shutil.rmtree(old, ignore_errors=True)


# -- data ----------------------------------------------------------------------------------------
def load_examples(ref: DataRef, min_pair_weight: float | None = None) -> list[dict[str, Any]]:
    """Rows as TRL reads them: ``{"messages"}`` for SFT, ``{"prompt","chosen","rejected"}`` for
    DPO (chat-message lists or plain strings). Other columns are dropped.

    ``min_pair_weight`` keeps only DPO pairs whose ``weight`` column is at least that value.
    Filtering, not a weighted loss: TRL's DPOTrainer (1.16) takes no per-example weight (its
    ``use_weighting`` is WPO's weighting by the policy's own probabilities, another thing), and
    a threshold on the recorded confidence is what the pair methods' weights are for."""
    from datagen_core.sources import load_rows

    rows, _ = load_rows(ref.path)
    if min_pair_weight is not None and ref.kind == "dpo":
        rows = _by_weight(rows, min_pair_weight, ref.path)
    out = [_sft_row(r, ref.path, i) if ref.kind == "sft" else _dpo_row(r, ref.path, i)
           for i, r in enumerate(rows)]
    kept = [r for r in out if r is not None]
    if not kept:
        raise InputError(f"{ref.path}: no usable {ref.kind} rows (of {len(rows)})")
    return kept


def _by_weight(rows: list[dict[str, Any]], threshold: float, path: str
               ) -> list[dict[str, Any]]:
    """The pairs with ``weight`` >= threshold; a file with no weights at all is an error (the
    recipe asks for something the data cannot give), not an empty training set."""
    weighted = [r for r in rows if isinstance(r.get("weight"), int | float)]
    if not weighted:
        raise InputError(f"{path}: min_pair_weight {threshold:g} needs a 'weight' column, and no "
                         f"pair of {len(rows)} has one (the pair method records none)")
    kept = [r for r in weighted if r["weight"] >= threshold]
    log.info("min_pair_weight %g: %d of %d pairs kept (%d without a weight)", threshold,
             len(kept), len(rows), len(rows) - len(weighted))
    if not kept:
        raise InputError(f"{path}: no pair has weight >= {threshold:g} (of {len(rows)}; highest "
                         f"{max(r['weight'] for r in weighted):g})")
    return kept


def _messages(value: Any, where: str, column: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not all(
            isinstance(m, dict) and "role" in m and "content" in m for m in value):
        raise InputError(f"{where}: {column!r} is not a list of chat messages (role, content)")
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in value]


def _sft_row(row: dict[str, Any], path: str, i: int) -> dict[str, Any] | None:
    if "messages" not in row:
        raise InputError(f"{path}: an SFT student needs a 'messages' column (found: "
                         f"{', '.join(sorted(row))})")
    msgs = _messages(row["messages"], f"{path}: row {i + 1}", "messages")
    return {"messages": msgs} if any(m["role"] == "assistant" for m in msgs) else None


def _dpo_row(row: dict[str, Any], path: str, i: int) -> dict[str, Any] | None:
    missing = [c for c in ("prompt", "chosen", "rejected") if c not in row]
    if missing:
        raise InputError(f"{path}: a DPO student needs prompt/chosen/rejected columns (missing "
                         f"{', '.join(missing)})")
    where = f"{path}: row {i + 1}"
    if all(isinstance(row[c], str) for c in ("prompt", "chosen", "rejected")):
        return {c: row[c] for c in ("prompt", "chosen", "rejected")}
    return {c: _messages(row[c], where, c) for c in ("prompt", "chosen", "rejected")}


def iter_texts(rows: list[dict[str, Any]]) -> Iterator[str]:
    """Every string of the data (message roles and contents): a scratch tokenizer's corpus."""
    for r in rows:
        for value in r.values():
            if isinstance(value, str):
                yield value
            else:
                for m in value:
                    yield m["role"]
                    yield m["content"]


# -- training ------------------------------------------------------------------------------------
def build_trainer(recipe: Recipe, rows: list[dict[str, Any]], out_dir: Path) -> Any:
    """The TRL trainer (SFTTrainer or DPOTrainer) for ``recipe`` on ``rows``, not yet trained.

    Tokenisation happens here, so ``trainer.train_dataset`` shows exactly what the model sees
    (``labels`` is -100 outside assistant turns for SFT with assistant-only loss)."""
    try:
        import datasets
        import torch
        import trl  # noqa: F401
    except ImportError as e:
        raise MissingDependencyError("training students", e.name or "trl", extra="train") from None

    from students.models import load_base, torch_dtype

    if not sys.stderr.isatty():
        datasets.disable_progress_bars()
    model, tok = load_base(recipe, iter_texts(rows))
    cuda = torch.cuda.is_available()
    dtype = torch_dtype(recipe.dtype)
    common: dict[str, Any] = {
        "output_dir": str(out_dir / "trainer"),
        "num_train_epochs": recipe.epochs,
        "max_steps": recipe.max_steps or -1,
        "per_device_train_batch_size": recipe.batch_size,
        "gradient_accumulation_steps": recipe.grad_accum,
        "learning_rate": recipe.learning_rate,
        "lr_scheduler_type": recipe.scheduler,
        "warmup_steps": recipe.warmup,
        "weight_decay": recipe.weight_decay,
        "max_grad_norm": recipe.max_grad_norm,
        "seed": recipe.seed,
        "data_seed": recipe.seed,
        "logging_steps": recipe.logging_steps,
        "logging_first_step": True,
        "report_to": [],
        "save_strategy": "no",
        "disable_tqdm": not sys.stderr.isatty(),
        "bf16": cuda and dtype == torch.bfloat16,
        "fp16": cuda and dtype == torch.float16,
        "use_cpu": not cuda,
        "activation_checkpointing": recipe.gradient_checkpointing,
        "max_length": recipe.max_length,
        "dataloader_num_workers": 0,
    }
    peft_config = None
    if recipe.lora is not None:
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=recipe.lora.r, lora_alpha=recipe.lora.alpha, lora_dropout=recipe.lora.dropout,
            target_modules=recipe.lora.target_modules, task_type="CAUSAL_LM")
    train_set = datasets.Dataset.from_list(rows)
    callbacks = [_metrics_callback(out_dir / "metrics.jsonl")]
    if recipe.kind == "dpo":
        from trl import DPOConfig, DPOTrainer

        losses = [recipe.dpo_loss] + (["sft"] if recipe.sft_weight else [])
        dpo_args = DPOConfig(**common, beta=recipe.beta, loss_type=losses,
                             loss_weights=[1.0, recipe.sft_weight] if recipe.sft_weight else None)
        # The frozen reference: with LoRA, the base with its adapter disabled (TRL's default);
        # otherwise a copy of the starting weights (TRL would reload the model from its path,
        # which a scratch model does not have).
        ref = None if peft_config is not None else _frozen_copy(model)
        return DPOTrainer(model=model, ref_model=ref, args=dpo_args, train_dataset=train_set,
                          processing_class=tok, peft_config=peft_config, callbacks=callbacks)
    from trl import SFTConfig, SFTTrainer

    sft_args = SFTConfig(**common, assistant_only_loss=recipe.assistant_only_loss, packing=False)
    return SFTTrainer(model=model, args=sft_args, train_dataset=train_set, processing_class=tok,
                      peft_config=peft_config, callbacks=callbacks)


def _frozen_copy(model: Any) -> Any:
    import copy

    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def _metrics_callback(path: Path) -> Any:
    """Append each log entry to metrics.jsonl as it comes: a live, crash-safe loss curve."""
    from transformers import TrainerCallback

    class MetricsFile(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None,
                   **kwargs: Any) -> None:
            if logs and state.is_world_process_zero:
                entry = {**logs, "step": state.global_step}
                with open(path, "ab") as f:
                    f.write(orjson.dumps(entry, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")

    return MetricsFile()


def _train(recipe: Recipe, ref: DataRef, out: Path, rec: StudentRecord) -> StudentRecord:
    import torch

    # torch's CPU thread count is per OS thread: set it here, in the thread that trains.
    torch.set_num_threads(recipe.resources.threads)
    rows = load_examples(ref, min_pair_weight=recipe.min_pair_weight)
    trainer = build_trainer(recipe, rows, out)
    from transformers import PrinterCallback

    # Without a terminal, the Trainer prints every log entry as a dict; the loss curve is in
    # metrics.jsonl already, so only errors and the caller's own lines reach the output.
    trainer.remove_callback(PrinterCallback)
    started = time.time()
    result = trainer.train() if recipe.max_steps != 0 else None  # 0: the initialised model
    seconds = time.time() - started
    model = trainer.model
    if recipe.lora is not None:
        model.save_pretrained(out / "adapter")
        model = model.merge_and_unload()
    model.save_pretrained(out / "model")
    trainer.processing_class.save_pretrained(out / "model")
    shutil.rmtree(out / "trainer", ignore_errors=True)
    history = trainer.state.log_history
    losses = [{"step": h.get("step"), "epoch": h.get("epoch"), "loss": h["loss"]}
              for h in history if "loss" in h]
    (out / "loss.json").write_bytes(orjson.dumps(losses))
    return rec.model_copy(update={
        "status": "finished",
        "finished_at": time.time(),
        "train_seconds": round(seconds, 3),
        "n_examples": len(rows),
        "steps": trainer.state.global_step,
        "final_loss": losses[-1]["loss"] if losses else None,
        "train_loss": getattr(result, "training_loss", None),
        "n_params": sum(p.numel() for p in model.parameters()),
        "device": str(trainer.args.device),
        "versions": _versions(),
    })


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "transformers", "trl", "peft"):
        with contextlib.suppress(PackageNotFoundError):
            out[name] = version(name)
    return out
