"""``attribute-variants`` (ALFA-style): preference pairs of follow-up questions, per attribute.

Seed rows hold a context (a post, a request, a conversation) and a follow-up question asked in
reply, optionally with privileged information the asker's side knows (a diagnosis, the real
cause). For each row and attribute (:mod:`generators.attributes`):

1. **One generation request** returns every version as labelled lines (``Original:``,
   ``Enhanced:``, ``Corrupted:`` and, with ``use_privileged`` and a privileged value,
   ``Privileged:``). One request rather than three because the versions must differ *only* in
   the attribute: a model that writes them side by side can hold everything else fixed, and it
   costs a third of the calls. The original is the question rewritten to stand alone, so all
   versions are compared on equal footing.
2. **A judge** (``judge`` spec, default the generator itself) scores each intended pair
   (enhanced > original, enhanced > corrupted, original > corrupted; privileged > original and
   privileged > corrupted when present) on that attribute alone, **twice**: once with the
   intended winner as Question A and once as Question B. LM judges favour a position; asking
   both ways and keeping a pair only when both verdicts pick the intended winner cancels that
   bias instead of learning it. A verdict whose scores contradict its own choice counts as a
   disagreement. Both verdicts, the scores and the raw replies are the pair's evidence; its
   margin is the mean score gap (winner minus loser) over the two orderings.
3. **Pairs** use as prompt the context as a user message asking for one follow-up question
   (``followup.txt``), and the two question versions as assistant answers: exactly what TRL's
   DPOTrainer reads.

Instances (SFT rows, index-aligned with the generation requests) are the enhanced questions:
``[user: follow-up request, assistant: enhanced question]``. A row is rejected with its reason
when the generation failed or did not parse, or when the judge did not confirm enhanced >
original; ``meta.judged`` says what happened to every pair kind. Judge replies go to
``Produced.extra_responses``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from string import Template
from typing import Any

from datagen_core.errors import ConfigError, InputError
from datagen_core.fingerprint import stable_hash
from datagen_core.records import GenRequest, GenResponse, Instance, Message, Pair, SamplingParams
from generators.attributes import Attribute, resolve_attributes
from generators.methods.base import (
    Generate,
    Method,
    MethodArgs,
    MethodContext,
    Produced,
    map_columns,
    response_problem,
)

PROMPT_DIR = "attribute-variants"
_COLUMN_GUESSES = {
    "context": ("context", "post", "conversation", "prompt"),
    "question": ("question", "follow_up", "followup"),
    "privileged": ("privileged", "diagnosis"),
}
#: intended orders (winner, loser); the privileged ones apply only when that variant exists
PAIR_KINDS = (("enhanced", "original"), ("enhanced", "corrupted"), ("original", "corrupted"))
PRIVILEGED_KINDS = (("privileged", "original"), ("privileged", "corrupted"))


def template(name: str, folder: str = PROMPT_DIR) -> Template:
    path = resources.files("generators.prompts").joinpath(folder, f"{name}.txt")
    return Template(path.read_text(encoding="utf-8").rstrip())


def render_context(value: Any) -> str:
    """A context column as text; a chat (list of messages) becomes ``role: content`` lines."""
    if isinstance(value, list):
        lines = []
        for m in value:
            if isinstance(m, dict) and "content" in m:
                lines.append(f"{str(m.get('role', 'user')).capitalize()}: {m['content']}")
            else:
                lines.append(str(m))
        return "\n".join(lines)
    return str(value)


def alfa_rows(rows: list[dict[str, Any]], columns: dict[str, str] | None,
              source: str) -> list[dict[str, Any]]:
    """Rows as ``{"id", "context", "question", "privileged"?}`` by column map or guesses."""
    chosen = map_columns(rows, columns, _COLUMN_GUESSES, source)
    cols = list(rows[0])
    for need in ("context", "question"):
        if need not in chosen:
            raise InputError(f"{source}: no {need} column; map one with --columns "
                             f"{need}=NAME (columns: {', '.join(cols)})")
    out = []
    for i, row in enumerate(rows):
        context, question = row.get(chosen["context"]), row.get(chosen["question"])
        if not context or not str(question or "").strip():
            raise InputError(f"{source}: row {i + 1} has an empty context or question")
        seed = {"id": str(row.get("id", i)), "context": render_context(context).strip(),
                "question": str(question).strip()}
        priv = row.get(chosen["privileged"]) if "privileged" in chosen else None
        if priv is not None and str(priv).strip():
            seed["privileged"] = str(priv).strip()
        out.append(seed)
    return out


# -- parsing -------------------------------------------------------------------------------------
_LABEL_RE = re.compile(
    r"^[ \t>*_#\-]*(original|enhanced|corrupted|privileged)\b[^:\n]{0,40}:", re.I | re.M)
_STRIP = " \t\"'“”‘’*_`"


def parse_variants(text: str, want_privileged: bool) -> tuple[dict[str, str], str | None]:
    """``Original: ...`` lines -> {label: question}, and a reject reason (None when usable).

    The first occurrence of a label wins and its value is the first non-empty line after it, so
    a model that explains itself after the list does not leak the explanation into a question.
    """
    marks = [(m.start(), m.end(), m.group(1).lower()) for m in _LABEL_RE.finditer(text)]
    found: dict[str, str] = {}
    for i, (_, end, label) in enumerate(marks):
        stop = marks[i + 1][0] if i + 1 < len(marks) else len(text)
        lines = [ln.strip(_STRIP) for ln in text[end:stop].splitlines()]
        value = next((ln for ln in lines if ln), "")
        if label not in found and value:
            found[label] = value
    need = ["original", "enhanced", "corrupted"] + (["privileged"] if want_privileged else [])
    missing = [n for n in need if n not in found]
    if missing:
        return found, f"missing section(s): {', '.join(missing)}"
    found = {k: found[k] for k in need}
    norm = {k: " ".join(v.lower().split()).rstrip("?.! ") for k, v in found.items()}
    for a, b in (("enhanced", "original"), ("corrupted", "original"), ("enhanced", "corrupted")):
        if norm[a] == norm[b]:
            return found, f"{a} variant identical to {b}"
    return found, None


@dataclass
class Verdict:
    """One judge reply: which question has more of the attribute, and the scores given."""

    better: str | None  # "A", "B", "tie" or None (unparseable)
    score_a: float | None = None
    score_b: float | None = None

    @property
    def inconsistent(self) -> bool:
        if self.score_a is None or self.score_b is None or self.better not in ("A", "B"):
            return False
        return (self.score_a - self.score_b) * (1 if self.better == "A" else -1) < 0

    def as_dict(self) -> dict[str, Any]:
        return {"better": self.better, "score_a": self.score_a, "score_b": self.score_b}


_SCORE_RE = re.compile(r"(?i:score)[^\S\n]*(?i:for)?[^\S\n]*(?i:question)?[^\S\n]*([AB])\b"
                       r"[^\d\n]{0,6}([1-5](?:\.\d+)?)")
_BETTER_RE = re.compile(r"(?i:better|winner)[^\S\n]*[:=]?[^\S\n*]*\**[^\S\n]*(?i:question)?"
                        r"[^\S\n]*(A|B|(?i:tie|neither|equal|both|same))\b")


def parse_verdict(text: str) -> Verdict:
    scores: dict[str, float] = {}
    for m in _SCORE_RE.finditer(text):
        scores.setdefault(m.group(1), float(m.group(2)))
    found = _BETTER_RE.search(text)
    better = None
    if found:
        better = found.group(1) if found.group(1) in ("A", "B") else "tie"
    elif "A" in scores and "B" in scores:
        diff = scores["A"] - scores["B"]
        better = "A" if diff > 0 else "B" if diff < 0 else "tie"
    return Verdict(better, scores.get("A"), scores.get("B"))


def judge_outcome(ab: Verdict, ba: Verdict) -> str:
    """``kept`` when both orderings prefer the intended winner (A in A/B, B in B/A)."""
    for order, v, want in (("A/B", ab, "A"), ("B/A", ba, "B")):
        if v.better is None:
            return f"unparseable judge reply ({order})"
        if v.inconsistent:
            return f"judge's scores contradict its choice ({order})"
        if v.better != want:
            return f"judge disagreed ({order})"
    return "kept"


def margin(ab: Verdict, ba: Verdict) -> float | None:
    """Mean score gap, intended winner minus loser, over both orderings (None without scores)."""
    if None in (ab.score_a, ab.score_b, ba.score_a, ba.score_b):
        return None
    assert ab.score_a is not None and ab.score_b is not None  # for mypy
    assert ba.score_a is not None and ba.score_b is not None
    return ((ab.score_a - ab.score_b) + (ba.score_b - ba.score_a)) / 2


def pair_weight(gap: float | None) -> float | None:
    """A pair's weight: its judge score gap as a share of the 1-5 scale's span, clipped to
    [0, 1] (a gap can be negative when the scores contradict the verdict); None without scores.
    The same reading as ``preference-pairs``' margin / 4."""
    return None if gap is None else min(1.0, max(0.0, gap / 4.0))


# -- the method ----------------------------------------------------------------------------------
class AttributeVariantsArgs(MethodArgs):
    columns: dict[str, str] | None = None
    #: attribute names (default: every built-in and every one in attributes_file)
    attributes: list[str] | None = None
    attributes_file: str | None = None
    #: also write a variant that may use the row's privileged information
    use_privileged: bool = False
    #: judge spec (provider:model); default: the generator itself, through the same engine
    judge: str | None = None
    #: sampling for judge requests, replacing the judge spec's whole sampling (unset fields take
    #: SamplingParams defaults, e.g. max_tokens 512): {"temperature": 0, "max_tokens": 32}
    judge_sampling: SamplingParams | None = None


@dataclass
class _Item:
    index: int
    seed: dict[str, Any]
    attribute: Attribute
    privileged: str | None


class AttributeVariants(Method):
    """ALFA-style attribute variants of follow-up questions; see the module docstring."""

    dry_run_exact = False
    name = "attribute-variants"
    makes_pairs = True
    version = "2"  # 2: pairs carry a weight
    Args = AttributeVariantsArgs
    args: AttributeVariantsArgs
    default_source = "builtin:alfa"

    async def run(self, ctx: MethodContext) -> Produced:
        a = self.args
        attrs = resolve_attributes(a.attributes, a.attributes_file)
        seeds = alfa_rows(ctx.rows, a.columns, ctx.source)
        judge = self._judge(ctx)
        items = [_Item(len(attrs) * i + j, seed, attr,
                       seed.get("privileged") if a.use_privileged else None)
                 for i, seed in enumerate(seeds) for j, attr in enumerate(attrs)]
        requests = [self._variants_request(it) for it in items]
        responses = await ctx.generate(requests)

        parsed: list[tuple[dict[str, str], str | None]] = []
        for it, resp in zip(items, responses):
            problem = response_problem(resp)
            parsed.append(({}, problem) if problem else
                          parse_variants(resp.text or "", it.privileged is not None))

        jtpl = template("judge")
        judge_requests: list[GenRequest] = []
        for it, (variants, reason) in zip(items, parsed):
            if reason is None:
                judge_requests += self._judge_requests(jtpl, it, variants)
        judge_responses = await judge(judge_requests) if judge_requests else []
        verdicts: dict[tuple[int, str, str], tuple[Verdict, GenResponse]] = {}
        for q, r in zip(judge_requests, judge_responses):
            v = parse_verdict(r.text or "") if r.ok else Verdict(None)
            verdicts[(q.meta["item"], q.meta["kind"], q.meta["order"])] = (v, r)

        out = Produced(requests=requests, responses=responses, extra_responses=judge_responses)
        ftpl = template("followup")
        for it, resp, (variants, reason) in zip(items, responses, parsed):
            prompt = [Message(role="user", content=ftpl.substitute(context=it.seed["context"]))]
            judged: dict[str, str] = {}
            if reason is None:
                for hi, lo in self._kinds(variants):
                    kind = f"{hi}>{lo}"
                    (ab, rab), (ba, rba) = (verdicts[(it.index, kind, o)] for o in ("ab", "ba"))
                    judged[kind] = judge_outcome(ab, ba)
                    if judged[kind] == "kept":
                        out.pairs.append(self._pair(len(out.pairs), it, kind, prompt,
                                                    variants[hi], variants[lo], ab, ba, rab, rba))
                if judged["enhanced>original"] != "kept":
                    reason = f"judge did not confirm enhanced > original: " \
                             f"{judged['enhanced>original']}"
            answer = variants.get("enhanced") if variants.get("enhanced") else resp.text
            messages = prompt + ([Message(role="assistant", content=answer)] if answer else [])
            out.instances.append(Instance(
                index=it.index,
                instance_id=stable_hash([it.seed["id"], it.attribute.name, answer or ""]),
                messages=messages, valid=reason is None, reject_reason=reason,
                meta={"row_id": it.seed["id"], "attribute": it.attribute.name,
                      "variants": variants, "judged": judged, "key": resp.key}))
        return out

    def _judge(self, ctx: MethodContext) -> Generate:
        if self.args.judge is None:
            return ctx.generate  # the generator judges itself: no second model loaded
        if ctx.generate_with is None:
            raise ConfigError(f"{self.name}: this context cannot call a separate judge")
        return ctx.generate_with(self.args.judge)

    def _variants_request(self, it: _Item) -> GenRequest:
        attr = it.attribute
        priv = template("privileged").substitute(privileged=it.privileged) if it.privileged else ""
        text = template("variants").substitute(
            context=it.seed["context"], question=it.seed["question"], attribute=attr.name,
            definition=attr.definition, scale=attr.scale_text(), privileged=priv,
            privileged_line="Privileged: <question>" if it.privileged else "")
        text = re.sub(r"\n{3,}", "\n\n", text).strip()
        return GenRequest(messages=[Message(role="user", content=text)],
                          meta={"row_id": it.seed["id"], "attribute": attr.name,
                                "privileged": it.privileged is not None, "item": it.index})

    @staticmethod
    def _kinds(variants: dict[str, str]) -> list[tuple[str, str]]:
        return list(PAIR_KINDS) + (list(PRIVILEGED_KINDS) if "privileged" in variants else [])

    def _judge_requests(self, tpl: Template, it: _Item,
                        variants: dict[str, str]) -> list[GenRequest]:
        attr, out = it.attribute, []
        for hi, lo in self._kinds(variants):
            for order, (qa, qb) in (("ab", (hi, lo)), ("ba", (lo, hi))):
                text = tpl.substitute(attribute=attr.name, definition=attr.definition,
                                      scale=attr.scale_text(), context=it.seed["context"],
                                      a=variants[qa], b=variants[qb])
                out.append(GenRequest(
                    messages=[Message(role="user", content=text)],
                    sampling=self.args.judge_sampling,
                    meta={"row_id": it.seed["id"], "attribute": attr.name, "kind": f"{hi}>{lo}",
                          "order": order, "item": it.index}))
        return out

    def _pair(self, index: int, it: _Item, kind: str, prompt: list[Message], chosen: str,
              rejected: str, ab: Verdict, ba: Verdict, rab: GenResponse,
              rba: GenResponse) -> Pair:
        evidence = {
            "judge": self.args.judge or "generator",
            "ab": {**ab.as_dict(), "text": rab.text, "key": rab.key},
            "ba": {**ba.as_dict(), "text": rba.text, "key": rba.key},
            "chosen_scores": [ab.score_a, ba.score_b],
            "rejected_scores": [ab.score_b, ba.score_a],
        }
        gap = margin(ab, ba)
        return Pair(
            index=index,
            pair_id=stable_hash([it.seed["id"], it.attribute.name, kind, chosen, rejected]),
            prompt=prompt,
            chosen=[Message(role="assistant", content=chosen)],
            rejected=[Message(role="assistant", content=rejected)],
            attribute=it.attribute.name, margin=gap, weight=pair_weight(gap), evidence=evidence,
            meta={"row_id": it.seed["id"], "kind": kind, "instance": it.index},
        )
