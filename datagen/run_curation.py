"""Curation inside a run: seed rows that are evaluation items are dropped before generation,
and every method's accepted output (SFT rows and preference pairs) is deduplicated and
decontaminated after it, with counts per reason stored in the run.

Why every method: a prompt-method row, an ALFA or MACS pair trained on by a DPO student leaks an
evaluation item exactly as an AgoraBench row does. What is compared differs by output:

- rows of methods that write new instructions (instance generation): the user turns, against
  each other and against the seeds (a copied seed is not a new problem);
- other rows (responses to the seed prompts, variants, edits): the answer, among rows with the
  same prompt (rows that answer different prompts are never duplicates, however much context
  they share);
- pairs: deduplicated on the prompt plus both responses (the same prompt, and near-identical
  chosen and rejected answers), dropped when the prompt is contaminated. Dropped pairs
  are kept apart (``rejected-pairs.jsonl``) with their reason.

A run whose evaluation sets cannot be read (offline with no ``$DATAGEN_EVAL_DIR``) is not
decontaminated: it says so in its curation record (``decontaminated: false`` and why), which
``datagen runs``, ``rank`` and the report show, and its id differs from a decontaminated run's.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import re
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import ValidationError

from datagen_core.errors import ConfigError, DatagenError
from datagen_core.records import Instance, Pair, validation_message

if TYPE_CHECKING:
    from generators.curation import CurationConfig, EvalIndex

log = logging.getLogger("datagen.runs")


def curation_config(curation: CurationConfig | dict[str, Any] | None) -> CurationConfig:
    from generators.curation import CurationConfig

    if isinstance(curation, CurationConfig):
        return curation
    try:
        return CurationConfig(**(curation or {}))
    except ValidationError as e:
        raise ConfigError(f"bad curation settings: {validation_message(e)}") from None


@functools.lru_cache(maxsize=4)
def eval_index(names: tuple[str, ...], n: int, root: str | None) -> EvalIndex:
    """Eval sets are loaded and indexed once per process (a bench runs many cells)."""
    from generators.curation import EvalIndex

    return EvalIndex.from_names(list(names), n=n, root=root)


@dataclass
class Decontamination:
    """What a run decontaminates against: the index, or why there is none."""

    index: EvalIndex | None
    skipped: str | None = None  # why decontamination could not run (None: it ran, or was off)

    @property
    def active(self) -> bool:
        return self.index is not None


def prepare(cfg: CurationConfig) -> Decontamination:
    """Load the eval index once, before generation; a set that cannot be read is recorded as
    a skipped decontamination (an error for a bench, which checks this in validation)."""
    if not cfg.decontaminate or not cfg.eval_sets:
        return Decontamination(None)
    try:
        return Decontamination(eval_index(tuple(cfg.eval_sets), cfg.ngram,
                                          cfg.eval_dir or os.environ.get("DATAGEN_EVAL_DIR")))
    except DatagenError as e:
        why = f"decontamination skipped: {e}"
        log.warning("%s", why)
        return Decontamination(None, why)


def drop_seed_items(rows: list[dict[str, Any]], columns: dict[str, str] | None, source: str,
                    cfg: CurationConfig, dec: Decontamination
                    ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Seed rows whose instruction is an evaluation item (the decontamination rule) are not
    used: not as prompts, not as demonstrations. Returns the rows kept and the counts."""
    if dec.index is None or not rows:
        return rows, None
    from generators.methods.seeded import seed_rows

    seeds = seed_rows(rows, columns, source, need_response=False)
    found = dec.index.check([s["instruction"] for s in seeds], cfg.coverage_threshold)
    kept = [r for r, c in zip(rows, found) if c is None]
    by = {k: v for k, v in dec.index.summary(found).items() if v}
    return kept, {"input": len(rows), "dropped": len(rows) - len(kept), "by": by}


def curate_outputs(m: Any, instances: list[Instance], pairs: list[Pair],
                   rows: list[dict[str, Any]], cfg: CurationConfig, dec: Decontamination,
                   seed_drops: dict[str, Any] | None) -> tuple[list[Pair], list[Pair],
                                                               dict[str, Any]]:
    """Curate a run's outputs in place (instances) and by split (pairs: kept, dropped); the
    returned record is what the run stores as its curation."""
    from generators.curation import curate_instances

    ccfg = cfg.model_copy(update={"decontaminate": dec.active})
    if m.new_instructions:
        from generators.methods.seeded import seed_rows

        seeds = [s["instruction"] for s in seed_rows(rows, getattr(m.args, "columns", None),
                                                     "seeds", need_response=False)]
        report = curate_instances(instances, seeds, ccfg, dec.index)
        counts = report.counts
    else:  # answers to given prompts: a duplicate answers the same prompt the same way
        live = [x for x in instances if x.valid]
        keep, reasons, dup = _answer_dedup(
            [_turns_text(x.messages) for x in live],
            ["\n".join(msg.content for msg in x.messages if msg.role != "user") for x in live],
            cfg)
        for x, k, why in zip(live, keep, reasons):
            if not k:
                x.valid, x.reject_reason = False, _global(why, live)
        report = curate_instances(instances, [], ccfg.model_copy(update={"dedup": False}),
                                  dec.index)
        counts = {"input": len(live), "kept": report.counts["kept"], **dup,
                  "contaminated": report.counts["contaminated"]}
    out: dict[str, Any] = {"counts": counts, "contaminated_by": report.contaminated_by,
                           "decontaminated": dec.active}
    skipped = skip_reason(cfg, dec)
    if skipped:
        out["skipped"] = skipped
    if seed_drops is not None:
        out["seeds"] = seed_drops
    kept, dropped = pairs, list[Pair]()
    if pairs:
        kept, dropped, out["pairs"] = _curate_pairs(pairs, cfg, dec)
    return kept, dropped, out


def _curate_pairs(pairs: list[Pair], cfg: CurationConfig, dec: Decontamination
                  ) -> tuple[list[Pair], list[Pair], dict[str, int]]:
    keep, reasons, counts = _answer_dedup(
        [_turns_text(p.prompt) for p in pairs],
        ["\n".join(_turns(p.chosen)) + "\n\n" + "\n".join(_turns(p.rejected)) for p in pairs],
        cfg)
    found = (dec.index.check([_turns_text(p.prompt) for p in pairs], cfg.coverage_threshold)
             if dec.index is not None else [None] * len(pairs))
    kept: list[Pair] = []
    dropped: list[Pair] = []
    for p, k, why, c in zip(pairs, keep, reasons, found):
        why = None if k else why
        if c is not None:
            p.meta["contamination"] = {"eval_set": c.eval_set, "item": c.item,
                                       "coverage": c.coverage}
            if why is None and cfg.drop_contaminated:
                why = f"prompt contaminated by {c.eval_set} #{c.item} (coverage {c.coverage:.2f})"
        if why is None:
            kept.append(p)
        else:
            p.meta["dropped"] = _global(why, pairs, "pair ")
            dropped.append(p)
    return kept, dropped, {"input": len(pairs), "kept": len(kept), **counts,
                           "contaminated": sum(c is not None for c in found)}


def _answer_dedup(prompts: list[str], answers: list[str], cfg: CurationConfig
                  ) -> tuple[list[bool], list[str | None], dict[str, int]]:
    """Exact and near-duplicate answers among rows with the same prompt (normalised): rows that
    answer different prompts are never duplicates, however long a context they share."""
    from generators.curation import dedup, normalize

    keep: list[bool] = [True] * len(prompts)
    reasons: list[str | None] = [None] * len(prompts)
    counts = {"exact": 0, "near": 0}
    if not cfg.dedup:
        return keep, reasons, counts
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(normalize(p), []).append(i)
    for members in groups.values():
        if len(members) < 2:
            continue
        d = dedup([answers[i] for i in members], config=cfg.dedup_config())
        for j, i in enumerate(members):
            if not d.keep[j]:
                keep[i] = False
                reasons[i] = _renumber(d.reasons[j] or "duplicate", members)
        counts["exact"] += d.counts.get("exact", 0)
        counts["near"] += d.counts.get("near", 0)
    return keep, reasons, counts


def _renumber(why: str, members: list[int]) -> str:
    return re.sub(r"#(\d+)", lambda g: f"#{members[int(g.group(1))]}", why)


def _global(why: str | None, items: list[Any], kind: str = "") -> str:
    """A reason's "#k" (a position among the rows compared) as the row's own index."""
    return re.sub(r"(?<=duplicate of )#(\d+)",
                  lambda g: f"{kind}#{items[int(g.group(1))].index}", why or "dropped by curation")


def _turns(messages: list[Any]) -> list[str]:
    return [m.content for m in messages]


def _turns_text(messages: list[Any]) -> str:
    return "\n".join(m.content for m in messages if m.role == "user")


# -- streaming runs ---------------------------------------------------------------------------
class StreamCuration:
    """:func:`curate_outputs` for a run that streams (answers to given prompts), a batch of
    rows at a time in index order, with the same verdicts, reasons and counts.

    Answer dedup compares only rows with the same (normalised) prompt, so its state is per
    prompt: the groups of the last few thousand prompts are in memory (the samples of one row
    are adjacent), older ones are written to a spill file beside the run and read back if their
    prompt comes again; in memory stays one 16-byte entry per prompt seen. Decontamination
    checks each row on its own. Seed rows that are evaluation items are dropped as they are
    read (:meth:`seed_filter`).
    """

    def __init__(self, cfg: CurationConfig, dec: Decontamination, spill: Path) -> None:
        self.cfg = cfg
        self.dec = dec
        self.dedup = _StreamDedup(cfg, spill) if cfg.dedup else None
        self.counts = {"input": 0, "kept": 0, "exact": 0, "near": 0, "contaminated": 0}
        self.contaminated_by: dict[str, int] = (
            dict.fromkeys(dec.index.names, 0) if dec.index is not None else {})
        self.seed_drops: dict[str, Any] | None = None

    def curate(self, instances: list[Instance]) -> None:
        """Curate the next rows (in index order) in place, as :func:`curate_outputs` would."""
        live = [x for x in instances if x.valid]
        self.counts["input"] += len(live)
        if self.dedup is not None:
            for x in live:
                why = self.dedup.check(_turns_text(x.messages), "\n".join(
                    msg.content for msg in x.messages if msg.role != "user"), x.index)
                if why is not None:
                    x.valid, x.reject_reason = False, why
        self.counts["exact"] = self.dedup.counts["exact"] if self.dedup else 0
        self.counts["near"] = self.dedup.counts["near"] if self.dedup else 0
        live = [x for x in live if x.valid]
        if self.dec.index is not None and live:
            from generators.curation import prompt_text

            found = self.dec.index.check([prompt_text(x) for x in live],
                                         self.cfg.coverage_threshold)
            for x, c in zip(live, found):
                if c is None:
                    continue
                self.counts["contaminated"] += 1
                self.contaminated_by[c.eval_set] = self.contaminated_by.get(c.eval_set, 0) + 1
                x.meta["contamination"] = {"eval_set": c.eval_set, "item": c.item,
                                           "coverage": c.coverage}
                if self.cfg.drop_contaminated:
                    x.valid, x.reject_reason = False, (
                        f"contaminated by {c.eval_set} #{c.item} (coverage {c.coverage:.2f})")
        self.counts["kept"] += sum(x.valid for x in live)

    def report(self) -> dict[str, Any]:
        """The run's curation record, as :func:`curate_outputs` writes it."""
        c = self.counts
        counts = {"input": c["input"], "kept": c["kept"], "exact": c["exact"],
                  "near": c["near"], "contaminated": c["contaminated"]}
        out: dict[str, Any] = {"counts": counts, "contaminated_by": self.contaminated_by,
                               "decontaminated": self.dec.active}
        skipped = skip_reason(self.cfg, self.dec)
        if skipped:
            out["skipped"] = skipped
        if self.seed_drops is not None:
            out["seeds"] = self.seed_drops
        return out

    def close(self) -> None:
        if self.dedup is not None:
            self.dedup.close()


def filter_seed_items(rows: Iterable[dict[str, Any]], columns: dict[str, str] | None,
                      source: str, cfg: CurationConfig, dec: Decontamination,
                      report: dict[str, Any], dropped_at: set[int] | None = None
                      ) -> Iterator[dict[str, Any]]:
    """:func:`drop_seed_items` lazily, a slice at a time: the kept rows; once they are
    exhausted, ``report`` holds the counts (left empty when nothing was checked) and
    ``dropped_at`` the positions of the rows dropped."""
    index = dec.index
    if index is None:
        yield from rows
        return
    from generators.methods.seeded import iter_seeds

    seen = dropped = 0
    by: dict[str, int] = {}
    for chunk in _chunks(iter(rows), 2048):
        seeds = list(iter_seeds(chunk, columns, source, need_response=False))
        found = index.check([s["instruction"] for s in seeds], cfg.coverage_threshold)
        seen += len(chunk)
        for k, v in index.summary(found).items():
            by[k] = by.get(k, 0) + v
        for j, (row, c) in enumerate(zip(chunk, found)):
            if c is None:
                yield row
            else:
                if dropped_at is not None:
                    dropped_at.add(seen - len(chunk) + j)
                dropped += 1
    if seen:
        report.update({"input": seen, "dropped": dropped, "by": {k: v for k, v in by.items() if v}})


def _chunks(it: Iterator[Any], size: int) -> Iterator[list[Any]]:
    while chunk := list(itertools.islice(it, size)):
        yield chunk


class _Group:
    """The rows so far that answer one prompt: every answer's first row by exact hash, and
    the answers kept (what a later answer may be a near duplicate of)."""

    __slots__ = ("exact", "kept", "pending")

    def __init__(self) -> None:
        self.exact: dict[int, int] = {}  # exact hash -> first row index with it
        self.kept: list[tuple[int, str]] = []  # (row index, answer)
        self.pending: tuple[int, str] | None = None  # a lone first answer, not yet hashed

    def settle(self) -> None:
        """Hash the lone first answer (deferred: most prompts never come again)."""
        if self.pending is not None:
            from generators.curation.text import text_hash, tokenize

            index, text = self.pending
            self.pending = None
            self.exact.setdefault(text_hash(tokenize(text)), index)
            self.kept.append((index, text))


class _StreamDedup:
    """:func:`_answer_dedup` one row at a time (see :class:`StreamCuration`)."""

    MAX_GROUPS = 8192

    def __init__(self, cfg: CurationConfig, spill: Path) -> None:
        from generators.compact import U64Map

        self.cfg = cfg.dedup_config()
        self.recent: OrderedDict[int, _Group] = OrderedDict()
        self.spilled = U64Map()  # prompt hash -> offset of its group's latest spill record
        self.spill_path = spill
        self._spill: Any = None
        self.counts = {"exact": 0, "near": 0}

    def check(self, prompt: str, answer: str, index: int) -> str | None:
        """Why row ``index`` is a duplicate of an earlier row (its reason), or None."""
        import xxhash

        from generators.curation import normalize

        p = xxhash.xxh3_64_intdigest(normalize(prompt).encode())
        group = self.recent.pop(p, None)
        if group is None:
            group = self._load(p)
        self.recent[p] = group
        if len(self.recent) > self.MAX_GROUPS:
            self._evict(*self.recent.popitem(last=False))
        if group.pending is None and not group.kept:
            group.pending = (index, answer)  # the prompt's first row: nothing to compare with
            return None
        group.settle()
        return self._against(group, answer, index)

    def _against(self, group: _Group, answer: str, index: int) -> str | None:
        from generators.curation.dedup import dedup_tokens
        from generators.curation.text import text_hash, tokenize

        cfg = self.cfg
        toks = tokenize(answer)
        h = text_hash(toks)
        if cfg.exact:
            first = group.exact.get(h)
            if first is not None:
                self.counts["exact"] += 1
                return f"exact duplicate of #{first}"
            group.exact[h] = index
        if cfg.near and group.kept:
            # the batch rule, replayed on the kept answers and this one: a row's verdict
            # depends only on the rows kept before it
            d = dedup_tokens([tokenize(t) for _, t in group.kept] + [toks], [], cfg)
            if not d.keep[-1]:
                self.counts["near"] += 1
                return re.sub(r"#(\d+)", lambda g: f"#{group.kept[int(g.group(1))][0]}",
                              d.reasons[-1] or "duplicate")
        group.kept.append((index, answer))
        return None

    def _load(self, p: int) -> _Group:
        group = _Group()
        offset = self.spilled.get(p)
        if offset is None:
            return group
        self._spill.flush()
        with open(self.spill_path, "rb") as f:
            f.seek(offset)
            rec = orjson.loads(f.readline())
        group.exact = {int(h): i for h, i in rec["exact"]}
        group.kept = [(i, t) for i, t in rec["kept"]]
        if rec.get("pending") is not None:
            group.pending = (rec["pending"][0], rec["pending"][1])
        return group

    def _evict(self, p: int, group: _Group) -> None:
        if self._spill is None:
            self._spill = open(self.spill_path, "wb")  # noqa: SIM115 - closed by close()
        offset = self._spill.tell()
        self._spill.write(orjson.dumps({
            "exact": [[str(h), i] for h, i in group.exact.items()], "kept": group.kept,
            "pending": group.pending}) + b"\n")
        self.spilled.set(p, offset)

    def close(self) -> None:
        if self._spill is not None:
            self._spill.close()
            self._spill = None
        self.spill_path.unlink(missing_ok=True)


def skip_reason(cfg: Any, dec: Any) -> str | None:
    """Why a run was not decontaminated (None: it was), for its curation record."""
    if dec.skipped:
        return str(dec.skipped)
    if not cfg.decontaminate:
        return "decontamination off (curation: decontaminate: false)"
    if not dec.active:
        return "no evaluation sets to decontaminate against (curation: eval_sets: [])"
    return None
