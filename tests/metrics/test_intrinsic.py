"""Intrinsic metrics: judge (scripted fake judge), perplexity and reward (tiny local models),
diversity, and the rates computed from planted instances; storage and idempotence."""

from __future__ import annotations

import json
import math

import pytest

from datagen_core.errors import ConfigError
from datagen_core.records import GeneratorSpec
from datagen_core.workspace import Workspace
from generators.backends.fake import FakeBackend
from metrics import facade as api
from metrics.diversity import (
    distinct_n,
    mean_pairwise_cosine_distance,
    per_item_mean_distance,
)
from metrics.intrinsic import build_metric, compute_intrinsic, read_items
from metrics.judge import parse_score
from metrics.store import Store
from tests.metrics.planting import build_tiny_models, plant_run

ROWS = [
    ("What is 12 times 12?", "12 times 12 is 144.", True, None),
    ("A train goes 60 km in 1.5 hours. What is its speed?", "60 / 1.5 = 40 km/h.", True, None),
    ("Solve x + 3 = 5.", "Subtract 3 from both sides: x = 2.", True, None),
    ("What is 12 times 12?", "144", False, "curation: exact duplicate of #0"),
    ("Natalia sold clips...", "72", False, "curation: contaminated by gsm8k #0 (coverage 0.91)"),
    ("Is 7 prime?", "Yes.", False, "no final answer"),
    ("What is 2+2?", "4", False, "duplicate of seed #3"),
]


@pytest.fixture
def store() -> Store:
    ws = Workspace.resolve().ensure()
    return Store(ws.db_path)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return build_tiny_models(tmp_path_factory.mktemp("tiny-models"))


def test_rates_lengths_tokens_and_cost_from_planted_instances(store: Store) -> None:
    plant_run(store, "run-a", ROWS, domain="math",
              requests=[(100, 50, 0.01), (80, 40, 0.02), (60, 30, 0.0)], cost_usd=0.03)
    res = compute_intrinsic(store, "run-a", "stats")
    assert res.computed
    v = {k: val for k, (val, _) in res.values.items()}
    assert v["validity_rate"] == pytest.approx(3 / 7)
    assert v["duplicate_rate"] == pytest.approx(2 / 7)  # exact duplicate + duplicate of seed
    assert v["contamination_rate"] == pytest.approx(1 / 7)
    assert v["tokens_per_instance"] == pytest.approx((150 + 120 + 90) / 3)
    assert v["cost_per_instance"] == pytest.approx(0.03 / 3)
    assert v["instruction_chars"] == pytest.approx(sum(len(r[0]) for r in ROWS[:3]) / 3)
    items = read_items(store, "run-a", "response_chars")
    assert [(i["idx"], i["value"]) for i in items] == [(i, len(r[1])) for i, r in
                                                         enumerate(ROWS[:3])]
    # Stored with the same config and data: nothing to do. Changed data: computed again.
    assert not compute_intrinsic(store, "run-a", "stats").computed
    plant_run(store, "run-a", ROWS[:3], domain="math")
    again = compute_intrinsic(store, "run-a", "stats")
    assert again.computed and again.values["validity_rate"][0] == 1.0


@pytest.mark.parametrize(("text", "score", "note"), [
    ("The problem needs two steps.\nScore: 4", 4.0, None),
    ("Score: 2 at first glance... on reflection **Score: 3**", 3.0, None),
    ("Rating = 5/5", 5.0, None),
    ("My verdict: [[2]]", 2.0, None),
    ("I'd give it 4 out of 5.", 4.0, None),
    ("3", 3.0, None),
    ("Score: 9", None, "score 9 outside 1-5"),
    ("This response is good.", None, "no score found"),
    ("", None, "empty reply"),
])
def test_parse_score(text: str, score: float | None, note: str | None) -> None:
    assert parse_score(text) == (score, note)


def test_judge_scores_through_the_engine_with_a_scripted_judge(store: Store) -> None:
    plant_run(store, "run-j", ROWS, domain="math")

    def responder(request):  # the judge: difficulty 4 always; quality per response
        prompt = request.messages[-1].content
        if "# Response" not in prompt:
            return "Two steps of routine arithmetic.\nScore: 4"
        if "144" in prompt:
            return "Correct and clear.\nScore: 5"
        if "40 km/h" in prompt:
            return "I cannot decide."
        return "Score: 7"

    spec = GeneratorSpec.parse("fake:judge")
    fake = FakeBackend(spec, responder=responder)
    res = api.compute_metrics("run-j", ["judge"], judge="fake:judge",
                              backends={"fake:judge": fake})[0]
    assert res.computed
    assert res.values["difficulty"] == (4.0, 3)
    assert res.values["quality"] == (5.0, 1)  # two replies unusable: missing, not guessed
    assert len(fake.history) == 6  # valid rows only, two aspects each
    assert "math problem" in fake.history[0].messages[-1].content  # the domain's rubric
    assert res.details["missing"] == {"no score found": 1, "score 7 outside 1-5": 1}
    with store.connect() as con:  # name, version and config stored; the judge decodes greedily
        version, config = con.execute("SELECT version, config FROM intrinsic WHERE run_id = ? "
                                      "AND metric = 'quality'", ["run-j"]).fetchone()
    config = json.loads(config)
    assert version == "1" and config["metric"] == "judge"
    assert config["config"]["judge"]["sampling"]["temperature"] == 0
    notes = {i["idx"]: (i["value"], i["note"]) for i in read_items(store, "run-j", "quality")}
    assert notes == {0: (5.0, None), 1: (None, "no score found"),
                     2: (None, "score 7 outside 1-5")}
    logs = list((Workspace.resolve().run_dir("run-j")).glob("judge-*.jsonl"))
    assert len(logs) == 1 and len(logs[0].read_text().splitlines()) == 6
    # Same config: nothing done. Forced: answered from the judge log, no new call.
    assert not api.compute_metrics("run-j", ["judge"], judge="fake:judge",
                                   backends={"fake:judge": fake})[0].computed
    forced = api.compute_metrics("run-j", ["judge"], judge="fake:judge", force=True,
                                 backends={"fake:judge": fake})[0]
    assert forced.computed and len(fake.history) == 6


def test_perplexity_is_per_item_and_counts_response_tokens_only(store: Store, tiny) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    plant_run(store, "run-p", ROWS[:3])
    res = compute_intrinsic(store, "run-p", "perplexity",
                            {"model": str(tiny["lm"]), "batch_size": 3})
    items = read_items(store, "run-p", "perplexity")
    assert len(items) == 3 and len({round(i["value"], 6) for i in items}) == 3

    tok = AutoTokenizer.from_pretrained(tiny["lm"])
    model = AutoModelForCausalLM.from_pretrained(tiny["lm"]).eval()
    q, a = ROWS[1][0], ROWS[1][1]
    prompt = f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n"
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    r_ids = tok(a, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([p_ids + r_ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0].float(), dim=-1)
    nll = [-logp[t - 1, ids[0, t]].item() for t in range(len(p_ids), ids.shape[1])]
    manual = math.exp(sum(nll) / len(nll))
    assert items[1]["value"] == pytest.approx(manual, rel=1e-4)
    logs = [math.log(i["value"]) for i in items]
    assert res.values["perplexity"][0] == pytest.approx(math.exp(sum(logs) / 3))


def test_reward_model_scores_each_item(store: Store, tiny) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    plant_run(store, "run-r", ROWS[:3])
    res = compute_intrinsic(store, "run-r", "reward", {"model": str(tiny["rm"]),
                                                        "batch_size": 2})
    items = read_items(store, "run-r", "reward")
    tok = AutoTokenizer.from_pretrained(tiny["rm"])
    model = AutoModelForSequenceClassification.from_pretrained(tiny["rm"]).eval()
    for i, (q, a, _, _) in enumerate(ROWS[:3]):
        text = tok.apply_chat_template([{"role": "user", "content": q},
                                        {"role": "assistant", "content": a}], tokenize=False)
        enc = tok(text, add_special_tokens=False, return_tensors="pt")
        with torch.no_grad():
            want = model(**enc).logits[0, 0].item()
        assert items[i]["value"] == pytest.approx(want, abs=1e-5)
    assert res.values["reward"][0] == pytest.approx(sum(i["value"] for i in items) / 3)


def test_diversity_identical_texts_are_zero_and_distinct_n_is_exact(store: Store) -> None:
    same = [("Tell me a joke about cats.", "Why did the cat sit on the computer?", True, None)]
    plant_run(store, "run-same", same * 5)
    v = compute_intrinsic(store, "run-same", "diversity").values
    assert v["instruction_diversity"][0] == pytest.approx(0.0, abs=1e-5)
    assert v["response_diversity"][0] == pytest.approx(0.0, abs=1e-5)
    plant_run(store, "run-mixed", ROWS[:3])
    mixed = compute_intrinsic(store, "run-mixed", "diversity").values
    assert mixed["instruction_diversity"][0] > 0.3
    # distinct-n on known strings: "a b a b" -> 1-grams {a, b} of 4; 2-grams {ab, ba} of 3
    assert distinct_n(["a b a b"], 1) == pytest.approx(2 / 4)
    assert distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)
    assert distinct_n(["a b", "a b"], 2) == pytest.approx(1 / 2)
    assert distinct_n(["The cat.", "the CAT!"], 1) == pytest.approx(4 / 6)
    assert distinct_n([""], 3) is None


def test_sum_identity_equals_naive_pairwise() -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    emb = rng.normal(size=(60, 8))
    u = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sims = u @ u.T
    naive = 1 - (sims.sum() - np.trace(sims)) / (60 * 59)
    assert mean_pairwise_cosine_distance(emb) == pytest.approx(naive, abs=1e-12)
    per = per_item_mean_distance(emb)
    assert per[7] == pytest.approx(1 - (sims[7].sum() - 1) / 59, abs=1e-12)
    assert mean_pairwise_cosine_distance(emb[:1]) is None


def test_metric_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="bogus"):
        build_metric("diversity", {"bogus": 1})
    with pytest.raises(ConfigError, match="unknown metric"):
        build_metric("nope")
    # Operational settings are not part of the key; semantic ones are.
    a = build_metric("diversity", {"batch_size": 8}).config.semantic()
    b = build_metric("diversity", {"batch_size": 64}).config.semantic()
    assert a == b != build_metric("diversity", {"sample": 10}).config.semantic()
