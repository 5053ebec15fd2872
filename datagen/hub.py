"""Dataset cards and Hub pushes for a run's data (SFT rows or preference pairs).

A pushed dataset says where it came from: the card (``README.md``, built with
``huggingface_hub``'s ``DatasetCard``/``DatasetCardData``) names the generator, the method with
its version and arguments, the run id, the run's curation counts (dedup, seed copies,
contamination), whether it was decontaminated and against what, and the PGR of a student trained
on it when one has been scored. The same facts go into the card's YAML header under ``datagen``,
for tools. A ``hf``-format pairs export gets the card beside it as ``README.md``.

Everything on a card comes from the run's stored record; the text is passed through the
project's redactor (URL credentials in a pool spec, a registered key), and the Hub token, which
``huggingface_hub`` finds in ``HF_TOKEN`` or the login file, is registered as a secret before a
push so that no error message can carry it.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any, Literal

import orjson

from datagen_core.errors import BackendError, MissingDependencyError
from datagen_core.secrets import redact, register_secret

Kind = Literal["rows", "pairs"]
#: where ``datasets.Dataset.push_to_hub`` puts a single ``train`` split
PUSHED_DATA_FILES = [{"split": "train", "path": "data/train-*"}]


def run_facts(run_id: str, workspace: str | Path | None = None) -> dict[str, Any]:
    """What a card says about a run: id, generator, method (version, arguments), seed set,
    curation record, decontamination, and PGR rows of the run (the domain mean) when scored."""
    from metrics.leaderboard import cells
    from metrics.store import Store, run_decontaminated

    store = Store.open_existing(workspace)
    r = store.run_summary(store.resolve_run(run_id))
    manifest = r.get("manifest") or {}
    curation = orjson.loads(r["curation"]) if r.get("curation") else None
    pgr = [c for c in cells(store) if c["run_id"] == r["run_id"]]
    return {
        "run_id": r["run_id"], "generator": r["generator"], "method": r["method"],
        "method_version": r["method_version"],
        "method_args": {k: v for k, v in (manifest.get("method_args") or {}).items()
                        if v not in (None, [], {})},
        "source": r.get("source"), "domain": r.get("domain"),
        "datagen_version": manifest.get("datagen_version"),
        "curation": curation, "decontaminated": run_decontaminated(curation),
        "pgr": [{k: c.get(k) for k in ("pgr", "ci_low", "ci_high", "n_items", "base_model",
                                       "reference_model")} for c in pgr],
    }


def _size_category(n: int) -> str:
    """The Hub's size bucket for ``n`` rows (``n<1K``, ``1K<n<10K``, ...)."""
    names = ["1K", "10K", "100K", "1M", "10M", "100M", "1B"]
    if n < 1000:
        return "n<1K"
    i = min(int(math.log10(n)) - 3, len(names) - 2)
    return f"{names[i]}<n<{names[i + 1]}"


def _code(text: str, lang: str = "") -> str:
    """A fenced block longer than any backtick run in ``text``: user text cannot close it."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{lang}\n{text}\n{fence}"


def _source(source: str | None) -> str:
    """The seed set as a card shows it: a data set id as is, a local file by its name only (a
    public card has no business showing the folders of the machine it was made on)."""
    if not source:
        return "-"
    if re.match(r"^[a-z][a-z0-9+.-]*://|^builtin:", source):
        return source
    return Path(source).name + " (a local file)"


def _cell(value: Any) -> str:
    """A markdown table cell: pipes escaped, one line."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def _curation_lines(cur: dict[str, Any] | None, decontaminated: bool) -> list[str]:
    if not cur:
        return ["- no curation record (a run from before curation was stored)"]
    lines = []
    counts = cur.get("counts") or {}
    if counts:
        lines.append("- rows: " + ", ".join(f"{counts[k]} {k}" for k in (
            "input", "kept", "exact", "near", "seed", "contaminated") if k in counts))
    if pairs := cur.get("pairs"):
        lines.append("- pairs: " + ", ".join(f"{pairs[k]} {k}" for k in (
            "input", "kept", "exact", "near", "contaminated") if k in pairs))
    if seeds := cur.get("seeds"):
        lines.append(f"- seed rows dropped before generation: {seeds.get('dropped', 0)} of "
                     f"{seeds.get('input', 0)} (evaluation items)")
    by = cur.get("contaminated_by") or {}
    if decontaminated:
        sets = ", ".join(f"{k} ({v} found)" for k, v in by.items()) or "the configured sets"
        lines.append(f"- decontaminated: yes, against {sets}")
    else:
        lines.append(f"- decontaminated: no ({cur.get('skipped') or 'not checked'})")
    return lines


def _pgr_lines(pgr: list[dict[str, Any]]) -> list[str]:
    if not pgr:
        return ["Not measured: no student trained on this run has been scored against a base "
                "and a reference (`datagen bench`, or `datagen train` + `eval` + `pgr`)."]
    out = []
    for p in pgr:
        ci = (f" (95% CI {p['ci_low']:.1f} to {p['ci_high']:.1f})"
              if p.get("ci_low") is not None and p.get("ci_high") is not None else "")
        out.append(f"- PGR {p['pgr']:.1f}{ci} over {p.get('n_items')} items; base "
                   f"`{p.get('base_model')}`, reference `{p.get('reference_model')}`")
    return out


def dataset_card(facts: dict[str, Any], kind: Kind, n_rows: int, *,
                 name: str | None = None, pushed: bool = False,
                 notes: list[str] | None = None) -> Any:
    """A ``huggingface_hub.DatasetCard`` for a run's export. ``pushed``: the data files are where
    ``Dataset.push_to_hub`` puts them (the card declares them, as ``datasets`` does); ``notes``:
    what the export did to the run's data (filters, people's labels)."""
    try:
        from huggingface_hub import DatasetCard, DatasetCardData
    except ImportError:  # pragma: no cover - a dependency of datasets
        raise MissingDependencyError("dataset cards", "huggingface_hub") from None

    pairs = kind == "pairs"
    summary = {k: facts[k] for k in ("run_id", "generator", "method", "method_version",
                                     "decontaminated")}
    summary["pgr"] = facts["pgr"][0]["pgr"] if facts["pgr"] else None
    data = DatasetCardData(
        pretty_name=name or f"datagen run {facts['run_id']}",
        tags=["synthetic", "datagen", facts["method"],
              *(["dpo", "preference"] if pairs else ["sft"])],
        task_categories=["text-generation"],
        size_categories=[_size_category(n_rows)],
        configs=[{"config_name": "default", "data_files": PUSHED_DATA_FILES}] if pushed else None,
        datagen=summary,
    )
    what = ("preference pairs: `prompt`, `chosen`, `rejected` as chat messages (the "
            "conversational form TRL's DPOTrainer reads), with `attribute`, `margin`, `weight`, "
            "`label_source` and the method's `evidence`/`meta` as JSON strings"
            if pairs else "SFT rows: chat `messages` (user, assistant) with `instance_id` and "
            "the method's `meta` as a JSON string")
    args = orjson.dumps(facts["method_args"], option=orjson.OPT_INDENT_2 |
                        orjson.OPT_SORT_KEYS).decode()
    rows = [("run", f"`{facts['run_id']}`"), ("generator", f"`{facts['generator']}`"),
            ("method", f"`{facts['method']}` version {facts['method_version']}"),
            ("seed set", _source(facts.get("source"))), ("domain", facts.get("domain") or "-"),
            (kind, n_rows), ("datagen version", facts.get("datagen_version") or "-")]
    body = "\n".join([
        f"# {name or 'datagen run ' + facts['run_id']}", "",
        f"Synthetic data generated with datagen: {n_rows} {what}.", "",
        "## Provenance", "", "| | |", "|---|---|",
        *(f"| {k} | {_cell(v)} |" for k, v in rows), "",
        "Method arguments:", "", _code(args, "json"), "",
        *([f"This export: {'; '.join(notes)}.", ""] if notes else []),
        "## Curation", "", *_curation_lines(facts.get("curation"), facts["decontaminated"]), "",
        "## Performance Gap Recovered", "",
        "PGR = 100 x (student - base) / (reference - base), for a student trained on this data "
        "(the mean over the domain's tasks, with a paired-bootstrap interval).", "",
        *_pgr_lines(facts["pgr"]), ""])
    return DatasetCard(redact(f"---\n{data.to_yaml()}\n---\n\n{body}"))


def _register_hub_token() -> None:
    """Make the Hub token a registered secret, so :func:`redact` masks it in any message."""
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        register_secret(os.environ.get(var))
    try:
        from huggingface_hub import get_token

        register_secret(get_token())
    except Exception:  # no login file, an old library: nothing to register
        pass


def push(repo_id: str, dataset: Any, card: Any) -> None:
    """``dataset.push_to_hub(repo_id)`` (unless None: a card-only update), then the card as the
    repo's README.md. A failure is one line with its cause, the token masked."""
    _register_hub_token()
    step = ""
    try:
        if dataset is not None:
            dataset.push_to_hub(repo_id)
            step = " (the data is pushed; pushing the card is what failed)"
        card.push_to_hub(repo_id, repo_type="dataset",
                         commit_message="Dataset card from datagen")
    except Exception as e:  # network, auth, repo name: one line with the cause
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BackendError(redact(f"push to the Hub ({repo_id}) failed: {first}{step}")
                           ) from None
