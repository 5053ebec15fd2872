"""Export a run's preference pairs in the forms trainers read, and count them.

::

    from datagen.pairs import export_pairs
    export_pairs("3f2a", "pairs.jsonl")                        # TRL DPOTrainer, conversational
    export_pairs("3f2a", "clarity.parquet", fmt="parquet", attribute="clarity", min_margin=1)
    export_pairs("3f2a", None, push_to_hub="org/name")         # datasets.Dataset.push_to_hub

Formats:

- ``trl``: JSONL with exactly ``prompt``/``chosen``/``rejected``, each a list of chat messages.
  ``datasets.load_dataset("json", ...)`` of it goes straight into ``DPOTrainer`` (no column
  surprises: provenance stays in the other formats).
- ``jsonl``: the same plus ``pair_id``, ``attribute``, ``margin``, ``weight`` and the
  ``evidence``/``meta`` objects (judge verdicts, rewards), for analysis.
- ``parquet`` and ``hf`` (``Dataset.save_to_disk``): the ``jsonl`` columns, with ``evidence`` and
  ``meta`` as JSON strings, because their shape differs between methods and rows and a columnar
  schema would otherwise fail or fill with nulls.

``push_to_hub`` pushes the ``hf`` form (the token comes from the usual ``HF_TOKEN`` / login)
and a dataset card (:mod:`datagen.hub`: generator, method, run, curation, decontamination, PGR);
the ``hf`` form on disk gets the same card as its ``README.md``.
Filters: ``attribute`` (exact name, as ``datagen pairs list`` shows) and ``min_margin`` (pairs
without a margin are dropped when it is set); they read the judge's pairs, before labels.

Human labels (``datagen serve``'s labelling page, ``datagen pairs import-labels``) win over the
judge's where a pair has them (the majority of its annotators; a split vote is a tie): people
preferring the rejected side swap the sides (the margin is negated, so it stays the judge's gap
chosen minus rejected, and the weight, a confidence in the judge's order, is cleared), a tie
drops the pair, and agreement keeps it as it was. So the set mixes human and LM labels, as in
Hybrid Preferences; ``jsonl``/``parquet``/``hf`` rows say which in ``label_source`` (``human``
or ``lm``), ``trl`` rows stay exactly prompt/chosen/rejected. ``use_labels=False`` exports the
judge's pairs as they are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from datagen_core.errors import ConfigError, InputError, NotFoundError
from datagen_core.records import Pair
from metrics.store import Store

PAIR_FORMATS = ("trl", "jsonl", "parquet", "hf")


def load_pairs(run_id: str, *, attribute: str | None = None, min_margin: float | None = None,
               workspace: str | Path | None = None) -> list[Pair]:
    """A run's pairs (by id or unique prefix), filtered; an error when none are left."""
    store = Store.open_existing(workspace)
    rid = store.resolve_run(run_id)
    pairs = store.read_pairs(rid)
    if not pairs:
        raise NotFoundError(f"run {rid} has no preference pairs: pairs come from methods such "
                            "as preference-pairs, attribute-variants and multi-attribute-edit")
    kept = [p for p in pairs
            if (attribute is None or p.attribute == attribute)
            and (min_margin is None or (p.margin is not None and p.margin >= min_margin))]
    if not kept:
        attrs = ", ".join(sorted({str(p.attribute) for p in pairs}))
        raise InputError(f"no pairs left after the filters (attribute={attribute}, "
                         f"min_margin={min_margin}); the run has {len(pairs)} pairs with "
                         f"attributes: {attrs}")
    return kept


def pair_counts(run_id: str, workspace: str | Path | None = None) -> list[dict[str, Any]]:
    """Per attribute: number of pairs and their margins (min, mean, max)."""
    store = Store.open_existing(workspace)
    return store.pair_counts(store.resolve_run(run_id))


def apply_labels(pairs: list[Pair], labels: dict[str, str]
                 ) -> tuple[list[Pair], list[str], int]:
    """Pairs with people's labels applied (see the module doc), each one's label source, and
    how many pairs people called a tie (dropped)."""
    kept: list[Pair] = []
    sources: list[str] = []
    ties = 0
    for p in pairs:
        label = labels.get(p.pair_id)
        if label == "tie":
            ties += 1
            continue
        if label == "rejected":
            p = p.model_copy(update={
                "chosen": p.rejected, "rejected": p.chosen, "weight": None,
                "margin": None if p.margin is None else -p.margin,
                "meta": {**p.meta, "swapped_by_people": True}})
        kept.append(p)
        sources.append("lm" if label is None else "human")
    return kept, sources, ties


def final_pairs(run_id: str, *, attribute: str | None = None, min_margin: float | None = None,
                use_labels: bool = True, workspace: str | Path | None = None
                ) -> tuple[list[Pair], list[str], int]:
    """The pairs an export writes: filtered, with people's labels applied unless
    ``use_labels`` is False; plus each pair's label source and the number dropped as ties."""
    pairs = load_pairs(run_id, attribute=attribute, min_margin=min_margin, workspace=workspace)
    if not use_labels:
        return pairs, ["lm"] * len(pairs), 0
    from metrics.labels import consensus_labels

    store = Store.open_existing(workspace)
    labels = consensus_labels(store, store.resolve_run(run_id))
    return apply_labels(pairs, labels)


def trl_rows(pairs: list[Pair]) -> list[dict[str, Any]]:
    """Conversational prompt/chosen/rejected, as TRL's DPOTrainer reads them."""
    return [{"prompt": [m.model_dump() for m in p.prompt],
             "chosen": [m.model_dump() for m in p.chosen],
             "rejected": [m.model_dump() for m in p.rejected]} for p in pairs]


def full_rows(pairs: list[Pair], json_strings: bool = False,
              sources: list[str] | None = None) -> list[dict[str, Any]]:
    """TRL columns plus provenance; ``json_strings`` encodes evidence/meta for columnar files;
    ``sources`` (human or lm per pair, default lm) fills ``label_source``."""
    def enc(v: dict[str, Any]) -> Any:
        return orjson.dumps(v).decode() if json_strings else v

    return [{**row, "pair_id": p.pair_id, "attribute": p.attribute, "margin": p.margin,
             "weight": p.weight, "label_source": src, "evidence": enc(p.evidence),
             "meta": enc(p.meta)}
            for row, p, src in zip(trl_rows(pairs), pairs, sources or ["lm"] * len(pairs))]


def _dataset(pairs: list[Pair], sources: list[str] | None = None) -> Any:
    try:
        import datasets
    except ImportError:  # pragma: no cover - a core dependency
        from datagen_core.errors import MissingDependencyError

        raise MissingDependencyError("hf export", "datasets") from None
    return datasets.Dataset.from_list(full_rows(pairs, json_strings=True, sources=sources))


def _card(run_id: str, pairs: list[Pair], sources: list[str], attribute: str | None,
          min_margin: float | None, workspace: str | Path | None, **kw: Any) -> Any:
    """The dataset card of an export (:mod:`datagen.hub`), saying which filters and how many
    people's labels made this set."""
    from datagen.hub import dataset_card, run_facts

    notes = [f"filtered: {k}={v}" for k, v in (("attribute", attribute),
                                                ("min_margin", min_margin)) if v is not None]
    if humans := sources.count("human"):
        notes.append(f"{humans} of {len(pairs)} pairs labelled by people (the rest by the LM "
                     "judge)")
    return dataset_card(run_facts(run_id, workspace), "pairs", len(pairs), notes=notes, **kw)


def export_pairs(
    run_id: str,
    out: str | Path | None,
    fmt: str = "trl",
    *,
    attribute: str | None = None,
    min_margin: float | None = None,
    workspace: str | Path | None = None,
    push_to_hub: str | None = None,
    use_labels: bool = True,
) -> Path | str:
    """Write (and/or push) a run's pairs, people's labels applied unless ``use_labels`` is
    False; returns the path written, else the Hub repo."""
    if fmt not in PAIR_FORMATS:
        raise ConfigError(f"unknown pairs format {fmt!r}: use one of {', '.join(PAIR_FORMATS)}")
    if out is None and push_to_hub is None:
        raise ConfigError("give --out PATH, --push-to-hub ORG/NAME, or both")
    pairs, sources, _ = final_pairs(run_id, attribute=attribute, min_margin=min_margin,
                                    use_labels=use_labels, workspace=workspace)
    if not pairs:
        raise InputError("people called every pair left a tie: nothing to export (export "
                         "the judge's pairs with use_labels=False / --ignore-labels)")
    path = Path(out) if out is not None else None
    if path is not None:
        from datagen_core.files import parquet_bytes, write_output

        if fmt in ("trl", "jsonl"):
            rows = trl_rows(pairs) if fmt == "trl" else full_rows(pairs, sources=sources)
            write_output(path, (orjson.dumps(r) + b"\n" for r in rows))
        elif fmt == "parquet":
            write_output(path, parquet_bytes(full_rows(pairs, json_strings=True,
                                                       sources=sources)))
        else:
            _dataset(pairs, sources).save_to_disk(str(path))
            _card(run_id, pairs, sources, attribute, min_margin, workspace,
                  name=path.name).save(path / "README.md")
    if push_to_hub is not None:
        from datagen.hub import push

        push(push_to_hub, _dataset(pairs, sources), _card(
            run_id, pairs, sources, attribute, min_margin, workspace, name=push_to_hub,
            pushed=True))
    if path is not None:
        return path
    assert push_to_hub is not None  # checked above
    return push_to_hub
