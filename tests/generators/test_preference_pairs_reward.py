"""preference-pairs scored by a reward model (a tiny randomly initialised local one), and an
on-policy pool member: a student folder in the workspace, served by the real ``hf`` backend."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import orjson
import pytest
import yaml

from datagen import api
from datagen_core.errors import ConfigError, NotFoundError
from datagen_core.workspace import Workspace
from generators.methods.preference_pairs import PreferencePairs
from generators.reward import load_reward_model
from generators.specs import load_spec, student_generator
from tests.generators.test_preference_pairs import PROMPTS, answer, fake, rate
from tests.metrics.planting import build_tiny_models


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_tiny_models(tmp_path_factory.mktemp("tiny-rm"))


def _run(tmp_path: Path, **args):
    src = tmp_path / "prompts.jsonl"
    src.write_bytes(b"\n".join(orjson.dumps(r) for r in PROMPTS))
    spec, gen = fake("fake:gen", answer)
    ospec, other = fake("fake:other", answer)
    jspec, jb = fake("fake:judge", rate)
    args = {"pool": ["fake:other"], "judge": "fake:judge", **args}
    res = api.generate(spec, str(src), method="preference-pairs", method_args=args,
                       backend=gen, backends={ospec.label: other, jspec.label: jb},
                       progress=False)
    return res, jb


def _reward(rm, prompt: str, response: str) -> float:
    return rm.score([[{"role": "user", "content": prompt},
                      {"role": "assistant", "content": response}]], batch_size=1)[0]


def test_reward_model_scorer_picks_by_reward(tmp_path: Path, tiny):
    res, judge = _run(tmp_path, scorer="reward-model", reward_model=str(tiny["rm"]),
                      reward_batch_size=3)
    assert not judge.history  # the reward model replaced the judge
    rm = load_reward_model(str(tiny["rm"]))
    assert len(res.pairs) == 5  # two distinct answers per prompt: a random RM never ties them
    for p in res.pairs:
        prompt = p.prompt[0].content
        ch, rj = p.chosen[0].content, p.rejected[0].content
        r_ch, r_rj = _reward(rm, prompt, ch), _reward(rm, prompt, rj)
        assert r_ch > r_rj  # the pair follows the reward order (scored one at a time here)
        got = p.evidence["reward"]
        assert got["model"] == str(tiny["rm"])
        assert got["chosen"] == pytest.approx(r_ch, abs=1e-5)
        assert got["rejected"] == pytest.approx(r_rj, abs=1e-5)
        assert p.margin == pytest.approx(got["chosen"] - got["rejected"])
        bt = 1 / (1 + math.exp(-p.margin))
        assert p.evidence["reward_p_chosen"] == pytest.approx(bt)
        assert p.weight == pytest.approx(2 * bt - 1) and 0 < p.weight < 1
        assert p.evidence["rule"] == "reward-best-vs-random-lower"
        assert p.evidence["aspects"] == [] and p.evidence["judge"] is None
        comps = {c["completion"]: c["reward"] for c in p.evidence["completions"]}
        assert comps[p.meta["chosen_completion"]] == got["chosen"]
        assert p.meta["chosen_on_policy"] is False and p.meta["rejected_on_policy"] is False
    # batch size is operational: the same run, and the same scores
    again, _ = _run(tmp_path, scorer="reward-model", reward_model=str(tiny["rm"]))
    assert again.run_id == res.run_id and again.stats.sent == 0
    assert [p.pair_id for p in again.pairs] == [p.pair_id for p in res.pairs]
    assert [p.evidence["reward"] for p in again.pairs] == [p.evidence["reward"]
                                                          for p in res.pairs]


def test_both_scorers_judge_picks_and_rewards_are_stored(tmp_path: Path, tiny):
    judged, _ = _run(tmp_path)
    res, judge = _run(tmp_path, scorer="both", reward_model=str(tiny["rm"]))
    assert not judge.history  # the same judge requests: answered from the first run's cache
    # the judge's ratings pick exactly the pairs of the judge-only run
    assert [p.pair_id for p in res.pairs] == [p.pair_id for p in judged.pairs]
    assert [p.weight for p in res.pairs] == [p.weight for p in judged.pairs]
    assert "reward" not in judged.pairs[0].evidence  # the default output is unchanged
    assert "reward" not in judged.pairs[0].evidence["completions"][0]
    for p in res.pairs:
        comps = {c["completion"]: c for c in p.evidence["completions"]}
        assert all(isinstance(c["reward"], float) for c in comps.values())
        assert p.evidence["reward"]["chosen"] == comps[p.meta["chosen_completion"]]["reward"]
        assert p.evidence["reward"]["rejected"] == comps[p.meta["rejected_completion"]]["reward"]
        assert p.evidence["rule"] == "tulu3-mean-rating"
    assert all("reward" in x.meta for x in res.instances)


def test_reward_arguments_are_one_line_errors(tiny):
    with pytest.raises(ConfigError, match="scorer reward-model needs reward_model"):
        PreferencePairs(scorer="reward-model")
    with pytest.raises(ConfigError, match="reward_model is set but scorer is judge"):
        PreferencePairs(reward_model=str(tiny["rm"]))
    m = PreferencePairs(scorer="both", reward_model="x", reward_batch_size=2, reward_device="cpu")
    assert m.non_default_args() == {"scorer": "both", "reward_model": "x"}


def _student(ws: Path, tiny, sid: str = "stu1") -> Path:
    """A trained student's folder: the tiny LM, told to end every answer within max_tokens
    (a random model never says eos by itself, and a truncated answer is no completion)."""
    from transformers import GenerationConfig

    folder = Workspace(ws).student_model_dir(sid)
    shutil.copytree(tiny["lm"], folder)
    cfg = GenerationConfig.from_pretrained(folder)
    cfg.forced_eos_token_id = cfg.eos_token_id
    cfg.save_pretrained(folder)
    return folder


def test_a_student_in_the_pool_is_on_policy(tmp_path: Path, tiny):
    folder = _student(Workspace.resolve().root, tiny)
    stu = tmp_path / "student.yaml"  # the file form sets the student's sampling
    stu.write_text(yaml.safe_dump({"spec": "student:stu1", "sampling": {
        "max_tokens": 6, "temperature": 0}}))
    assert student_generator(load_spec(str(stu)), Workspace.resolve().root).model == str(folder)
    src = tmp_path / "prompts.jsonl"
    src.write_bytes(b"\n".join(orjson.dumps(r) for r in PROMPTS[:3]))
    gspec, gen = fake("fake:gen", answer)
    res = api.generate(gspec, str(src), method="preference-pairs", method_args={
        "pool": [str(stu)], "scorer": "reward-model", "reward_model": str(tiny["rm"])},
        backend=gen, progress=False)
    gens = {x.meta["generator"] for x in res.instances}
    assert gens == {"fake:gen", "student:stu1"}
    student_answers = [x for x in res.instances if x.meta["generator"] == "student:stu1"]
    assert len(student_answers) == 3 and all(x.messages[-1].role == "assistant"
                                             for x in student_answers)
    assert res.pairs
    for p in res.pairs:
        for side in ("chosen", "rejected"):
            assert p.meta[f"{side}_on_policy"] is (p.meta[f"{side}_generator"] == "student:stu1")
    assert {p.meta["chosen_generator"] for p in res.pairs} | {
        p.meta["rejected_generator"] for p in res.pairs} == {"fake:gen", "student:stu1"}


def test_a_missing_student_is_one_line(tmp_path: Path):
    with pytest.raises(NotFoundError, match="student nope: no trained model at"):
        student_generator(load_spec("student:nope"), tmp_path)
    with pytest.raises(ConfigError, match="bad student spec"):
        student_generator(load_spec("student:../x"), tmp_path)
    assert student_generator(load_spec("fake:x"), tmp_path).label == "fake:x"
