"""AgoraBench methods with scripted backends: accepted sets, rejections, feedback, seeds."""

from __future__ import annotations

import re

import orjson
import pytest

from datagen import api
from datagen_core.errors import InputError, RunFailedError
from datagen_core.records import GeneratorSpec
from generators.backends.fake import FakeBackend
from tests.conftest import ASSETS

GOOD_MATH = ("Instruction: A box holds 12 pens. Sam buys 7 boxes and gives away 15 pens. "
             "How many pens does he keep?\nResponse: 7 boxes hold 7 * 12 = 84 pens.\n"
             "He keeps 84 - 15 = 69 pens.\n#### 69")
GOOD_CODE = ("Instruction: Write a function `double_all(xs: list[int]) -> list[int]` that "
             "doubles every number.\nResponse: Use a list comprehension.\n```python\n"
             "def double_all(xs):\n    return [2 * x for x in xs]\n```\nTests:\n"
             "assert double_all([1, 2]) == [2, 4]\nassert double_all([]) == []")
GOOD_GENERAL = ("Instruction: Describe a quiet library in exactly two sentences.\n"
                "Response: Sunlight falls across long oak tables. The only sound is the soft "
                "turning of pages.")


def fake(responder, max_tokens: int = 400) -> tuple[GeneratorSpec, FakeBackend]:
    spec = GeneratorSpec.parse("fake:scripted", sampling={"max_tokens": max_tokens},
                               limits={"max_retries": 0})
    return spec, FakeBackend(spec, responder=responder)


def run(method, domain, responder, n=None, source=None, **args):
    spec, backend = fake(responder, max_tokens=args.pop("max_tokens", 400))
    res = api.generate(spec, source, n=n, method=method, domain=domain, method_args=args,
                       backend=backend)
    return res, backend


@pytest.mark.parametrize(("domain", "good"), [("math", GOOD_MATH), ("code", GOOD_CODE),
                                               ("general", GOOD_GENERAL)])
def test_instance_generation_accepts_exactly_the_good_outputs(domain, good):
    script = {0: good, 1: good.replace("Instruction:", "Problem statement"),  # malformed
              2: good + " and more" * 500,                                   # truncated
              3: "I cannot help with that."}                                 # malformed

    def responder(request):
        return script[request.sample % 4]

    res, backend = run("instance-generation", domain, responder, n=8, max_tokens=300)
    assert len(backend.history) == 8
    kept = [x for x in res.instances if x.valid]
    assert [x.index for x in kept] == [0]  # #4 repeats #0 and is dropped as a duplicate
    assert res.instances[4].reject_reason == "exact duplicate of #0"
    reasons = sorted({x.reject_reason for x in res.instances if not x.valid})
    assert "truncated (finish_reason=length)" in reasons
    assert "missing Instruction:/Response: sections" in reasons
    summary = api.show_run(res.run_id)
    assert summary["n_valid"] == len(kept)
    assert sum(r["n"] for r in summary["rejections"]) == 8 - len(kept)


def test_each_request_has_k_demonstrations_and_a_theme():
    res, backend = run("instance-generation", "math", lambda r: GOOD_MATH, n=3, k=2)
    for req in backend.history:
        text = req.messages[0].content
        assert text.count("\nInstruction: ") == 2 + 1  # two examples + the format line
        assert re.search(r'theme "[^"]+"', text)
    assert all(len(x.meta["demos"]) == 2 for x in res.instances)


def test_accepted_outputs_feed_later_demonstrations_in_the_stated_share():
    counter = iter(range(1000))

    def responder(request):
        i = next(counter)
        return GOOD_GENERAL.replace("quiet library", f"quiet library number {i}")

    res, _ = run("instance-generation", "general", responder, n=6, k=2, accepted_share=0.5,
                 round_size=2)
    first, later = res.instances[:2], res.instances[2:]
    assert all(all(d.startswith("seed:") for d in x.meta["demos"]) for x in first)
    for x in later:
        sources = [d.split(":")[0] for d in x.meta["demos"]]
        assert sources.count("accepted") == 1 and sources.count("seed") == 1


def test_response_generation_validates_the_domain_format():
    def responder(request):
        if "#1" in request.messages[0].content:
            return "no final answer here"
        return "Add them: 2 + 3 = 5.\n#### 5"

    seeds = ASSETS / "gsm8k" / "train.jsonl"  # test questions would be flagged as contaminated
    res, _ = run("response-generation", "math", responder, n=5, source=str(seeds),
                 columns={"instruction": "question"})
    assert len(res.instances) == 5
    assert all(x.valid for x in res.instances)
    assert res.instances[0].meta["answer"] == "5"


def test_code_response_generation_runs_seed_tests():
    seeds = ASSETS / "mbpp" / "mbpp.jsonl"

    def responder(request):
        return "Wrong on purpose.\n```python\ndef f(*a):\n    return None\n```"

    with pytest.raises(RunFailedError, match="kept no row") as failed:
        run("response-generation", "code", responder, n=2, source=str(seeds),
            columns={"instruction": "text", "tests": "test_list"})
    res = failed.value.result
    assert not any(x.valid for x in res.instances)
    assert all(x.reject_reason.startswith("tests failed") for x in res.instances)


def test_quality_enhancement_keeps_or_flags_the_answer():
    def responder(request):  # one rewrite per seed (identical rewrites would be duplicates)
        seed = sum(map(ord, request.messages[-1].content))
        return (f"Instruction: Improved problem {seed} with {seed % 97} more details.\n"
                "Response: Step one.\nStep two.\n#### 999999")

    res, _ = run("quality-enhancement", "math", responder, n=2)
    assert all(x.valid for x in res.instances)
    assert all(x.meta["answer_changed"] for x in res.instances)


def test_identical_rewrites_are_deduplicated_like_new_problems():
    def responder(request):
        return ("Instruction: Improved problem statement with details.\n"
                "Response: Step one.\nStep two.\n#### 999999")

    res, _ = run("quality-enhancement", "math", responder, n=2)
    assert [x.valid for x in res.instances] == [True, False]
    assert res.instances[1].reject_reason == "exact duplicate of #0"


def test_seeds_need_the_columns_the_method_uses(tmp_path):
    p = tmp_path / "s.jsonl"
    p.write_text('{"question": "What is 2+2?"}\n' * 5)
    with pytest.raises(InputError, match="needs responses"):
        run("quality-enhancement", "math", lambda r: GOOD_MATH, source=str(p))
    with pytest.raises(InputError, match="column 'nope'"):
        run("response-generation", "math", lambda r: GOOD_MATH, source=str(p),
            columns={"instruction": "nope"})


@pytest.mark.parametrize("method", ["instance-generation", "response-generation",
                                    "quality-enhancement"])
@pytest.mark.parametrize("domain", ["math", "code", "general"])
def test_every_method_and_domain_runs_offline_with_builtin_seeds(method, domain):
    good = {"math": GOOD_MATH, "code": GOOD_CODE, "general": GOOD_GENERAL}[domain]

    def responder(request):
        seed = request.meta.get("seed")
        if method == "response-generation":  # answer with the seed's own (correct) response
            return seed["response"]
        if method == "quality-enhancement":
            return f"Instruction: {seed['instruction']}\nResponse: {seed['response']}"
        return good

    res, _ = run(method, domain, responder, n=3)
    assert len(res.instances) == 3
    assert res.instances[0].valid, res.instances[0].reject_reason
    assert (res.run_dir / "data.parquet").exists()


# -- verified responses (rejection sampling) ---------------------------------------------------
def _verify_run(tmp_path, domain, rows, responder, verify):
    src = tmp_path / f"{domain}-{verify}.jsonl"
    src.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return run("response-generation", domain, responder, source=str(src), verify=verify)[0]


def test_verified_math_responses_match_the_seed_gold_answer(tmp_path):
    rows = [{"question": "Tom has 3 apples and buys 4 more. How many apples?", "answer": "#### 7"},
            {"question": "A pen costs 2 dollars. What do 5 pens cost?", "answer": "#### 10"},
            {"question": "What is half of 18 apples, in apples?", "solution": "It is 9."}]

    def responder(q):  # right on the first, wrong on the second
        return "3 + 4 = 7.\n#### 7" if "Tom" in q.messages[-1].content else "#### 12"

    kept_all = _verify_run(tmp_path, "math", rows, responder, verify=False)
    assert [x.valid for x in kept_all.instances] == [True, True, True]
    assert [x.meta["correct"] for x in kept_all.instances] == [True, False, None]

    verified = _verify_run(tmp_path, "math", rows, responder, verify=True)
    assert [x.valid for x in verified.instances] == [True, False, False]
    assert verified.instances[1].reject_reason == "wrong answer: 12 (gold 10)"
    assert verified.instances[2].reject_reason == "not verifiable: the seed has no gold answer"
    # the acceptance rate is the run's kept share; accepted_correct the intrinsic metric
    assert api.show_run(verified.run_id)["n_valid"] == 1
    api.compute_metrics(kept_all.run_id, ["stats"])
    assert api.intrinsic_values(kept_all.run_id)["accepted_correct"] == (0.5, 2)


def test_verified_code_responses_pass_the_seed_tests(tmp_path):
    rows = [{"instruction": "Write a function `add(a, b)` that returns the sum of a and b.",
             "tests": ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"]},
            {"instruction": "Write a function `sub(a, b)` that returns a minus b."}]

    def responder(q):
        name, op = ("add", "+") if "add(" in q.messages[-1].content else ("sub", "-")
        return f"Easy.\n```python\ndef {name}(a, b):\n    return a {op} b\n```"

    plain = _verify_run(tmp_path, "code", rows, responder, verify=False)
    assert [x.meta["correct"] for x in plain.instances] == [True, None]
    verified = _verify_run(tmp_path, "code", rows, responder, verify=True)
    assert [x.valid for x in verified.instances] == [True, False]
    assert verified.instances[1].reject_reason == "not verifiable: the seed has no tests"


def test_verified_general_responses_follow_the_seed_instruction_checks(tmp_path):
    rows = [{"prompt": "Describe a cat. Your entire response must be in lowercase letters.",
             "instruction_id_list": ["change_case:english_lowercase"], "kwargs": [{}]},
            {"prompt": "Describe a dog. Your entire response must be in lowercase letters.",
             "instruction_id_list": ["change_case:english_lowercase"], "kwargs": [{}]}]

    def responder(q):
        return ("a small quiet animal that naps." if "cat" in q.messages[-1].content
                else "A Loyal Friend Who Barks.")

    verified = _verify_run(tmp_path, "general", rows, responder, verify=True)
    assert [x.valid for x in verified.instances] == [True, False]
    assert verified.instances[1].reject_reason == (
        "instructions not followed: change_case:english_lowercase")
    assert [x.meta["correct"] for x in verified.instances] == [True, False]
