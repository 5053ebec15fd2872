"""Gold preference pairs: the reference pair set of a DPO suite in a domain with gold answers.

PGR for DPO students needs a reference trained by the same recipe on pairs whose labels are
right by construction. Where the seeds carry a gold response with a numeric final answer
(``arithmetic``, ``math``), the gold pair for a seed is its gold response (chosen) against the
same response with the final number changed (rejected): the two sides differ only in the one
thing the tasks score, so the pair says nothing but "this answer, not that one". The change is a
seeded offset of 1-10 either way, never to the gold value itself, and the domain's verifier must
call the chosen side right and the rejected side wrong, or the seed is skipped.

Other domains have no such construction: their suites give ``reference: {pairs: FILE}``
(human-labelled or otherwise trusted pairs).
"""

from __future__ import annotations

import random
import re
from typing import Any

from datagen_core.fingerprint import stable_hash

#: domains whose gold responses end in a number a wrong answer can replace
GOLD_PAIR_DOMAINS = ("arithmetic", "math")

_LAST_INT = re.compile(r"-?\d+(?!.*\d)", re.S)


def check_gold_pairs(domain: str) -> str | None:
    """Why ``reference: gold`` cannot make gold pairs in ``domain`` (None: it can)."""
    if domain in GOLD_PAIR_DOMAINS:
        return None
    return (f"gold pairs need gold answers to falsify ({', '.join(GOLD_PAIR_DOMAINS)} domains); "
            f"in {domain} give reference: {{pairs: FILE}} (prompt/chosen/rejected rows)")


def _wrong(response: str, rng: random.Random) -> str | None:
    m = _LAST_INT.search(response)
    if m is None:
        return None
    value = int(m.group(0))
    delta = rng.choice([d for d in range(-10, 11) if d != 0])
    return response[:m.start()] + str(value + delta) + response[m.end():]


def gold_pairs(seeds: list[dict[str, Any]], domain: str, seed: int = 0) -> list[dict[str, Any]]:
    """TRL conversational rows (prompt/chosen/rejected) from seed rows with gold responses."""
    from generators.domains.base import get_domain

    dom = get_domain(domain)
    out = []
    for s in seeds:
        gold = s.get("response")
        if not gold:
            continue
        rng = random.Random(stable_hash([seed, s["id"]]))
        wrong = _wrong(gold, rng)
        if wrong is None:
            continue
        ok = dom.validate(s["instruction"], gold, row=s)
        bad = dom.validate(s["instruction"], wrong, row=s)
        if not (ok.ok and bad.ok and dom.correct(gold, ok, s)[0] is True
                and dom.correct(wrong, bad, s)[0] is False):
            continue
        out.append({"prompt": [{"role": "user", "content": s["instruction"]}],
                    "chosen": [{"role": "assistant", "content": gold}],
                    "rejected": [{"role": "assistant", "content": wrong}]})
    return out
