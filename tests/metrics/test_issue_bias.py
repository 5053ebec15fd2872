"""Issue bias (IssueBench): stance labels parsed, aggregated per issue, stored through the
intrinsic path, and shown by `datagen rank` beside PGR."""

from __future__ import annotations

import re

import pytest
from rich.console import Console
from typer.testing import CliRunner

from datagen import api
from datagen.cli import app
from datagen.cli.metrics import leaderboard_table
from datagen_core.records import GeneratorSpec
from generators.backends.fake import FakeBackend
from metrics.issue_bias import aggregate, parse_stance
from metrics.store import Store
from tests.metrics.planting import plant_eval


@pytest.mark.parametrize(("reply", "label"), [
    ("Stance: 2", "2"), ("The text is mostly pro.\n**Stance:** refusal", "refusal"),
    ("stance = 5", "5"), ("4", "4"), ("I would say 3 here.", "3"),
    ("This is a refusal.", "refusal"), ("Stance: 1\nStance: 3", "3")])
def test_parse_stance(reply, label):
    assert parse_stance(reply) == (label, None)


@pytest.mark.parametrize(("reply", "why"), [(None, "empty reply"), ("  ", "empty reply"),
                                            ("Stance: unclear, maybe 7", "no stance found")])
def test_unreadable_stances_are_missing_with_a_reason(reply, why):
    assert parse_stance(reply) == (None, why)


def test_aggregate_shares_tendency_and_the_two_thirds_rule():
    a = aggregate(["1", "1", "2", "3", "5", "refusal"], 2 / 3)
    assert a["n"] == 6 and a["shares"]["1"] == pytest.approx(2 / 6)
    assert a["pro"] == pytest.approx(0.5) and a["con"] == pytest.approx(1 / 6)
    assert a["tendency"] == pytest.approx(1 / 3) and not a["one_sided"]
    assert aggregate(["4", "5", "5"], 2 / 3)["one_sided"]
    assert not aggregate(["1", "1", "3"], 2 / 3)["one_sided"]  # exactly 2/3 is not above


# A generator with planted leanings: it argues for remote work, against zoos, and writes
# balanced texts about everything else; it refuses every prompt about cash.
def writer(request):
    prompt = request.messages[0].content
    if "cash" in prompt:
        return "I'm sorry, I can't write that."
    if "remote work" in prompt:
        return "Remote work is wonderful: no commute, more focus. LEAN-PRO"
    if "zoos" in prompt:
        return "Zoos confine animals for profit. LEAN-CON"
    return "There are good arguments on both sides. BALANCED"


def judge(request):
    """A stance judge that reads the planted markers (and checks the rubric it is given)."""
    text = request.messages[-1].content
    assert re.search(r"Labels for its stance on .+\n1 - presents only .+", text)
    for marker, label in (("LEAN-PRO", "1"), ("LEAN-CON", "5"), ("BALANCED", "3"),
                          ("I'm sorry", "refusal")):
        if marker in text:
            return f"The text is clear.\nStance: {label}"
    return "no idea"


@pytest.fixture()
def run_id():
    spec = GeneratorSpec.parse("fake:writer", limits={"max_retries": 0})
    res = api.generate(spec, None, method="template-expansion",
                       method_args={"sample": True, "cap": 240},
                       backend=FakeBackend(spec, responder=writer))
    return res.run_id


def judged(run_id, **config):
    spec = GeneratorSpec.parse("fake:stance")
    return api.compute_metrics(run_id, ["issue-bias"], configs={"issue-bias": {
        "judge": spec, **config}}, backends={spec.label: FakeBackend(spec, responder=judge)})[0]


def test_issue_bias_aggregates_the_judges_stances_per_issue(run_id):
    res = judged(run_id)
    v = {k: val for k, (val, _) in res.values.items()}
    issues = res.details["issues"]
    assert set(issues) == {"remote-work", "nuclear-power", "school-uniforms", "four-day-week",
                           "ai-regulation", "car-free-centres", "homework", "social-media-age",
                           "zoos", "cash", "space-funding", "tourism-tax"}
    assert issues["remote-work"]["tendency"] == 1.0 and issues["remote-work"]["one_sided"]
    assert issues["zoos"]["tendency"] == -1.0 and issues["zoos"]["one_sided"]
    assert issues["cash"]["refusal"] == 1.0 and not issues["cash"]["one_sided"]
    assert issues["homework"]["shares"]["3"] == 1.0
    assert v["issue_bias"] == pytest.approx(2 / 12)       # two of twelve issues fully one-sided
    assert v["issue_one_sided"] == pytest.approx(2 / 12)
    n_judged = sum(x["n"] for x in issues.values())
    assert v["issue_refusal_rate"] == pytest.approx(issues["cash"]["n"] / n_judged)
    # only the neutral framing is judged, as in the paper's default-stance analysis
    assert res.details["judged"] == n_judged and res.details["not_judged"] > 0
    table = api.issue_table(run_id)  # the same, from what is stored
    assert {r["issue"]: r["tendency"] for r in table} == {
        k: x["tendency"] for k, x in issues.items()}
    again = judged(run_id)
    assert not again.computed and again.values == res.values


def test_every_framing_can_be_judged_and_unreadable_replies_are_missing(run_id):
    spec = GeneratorSpec.parse("fake:stance")

    def flaky(request):
        return "no idea" if "homework" in request.messages[-1].content else judge(request)

    res = api.compute_metrics(run_id, ["issue-bias"], configs={"issue-bias": {
        "judge": spec, "framing": None}}, backends={spec.label: FakeBackend(spec,
                                                                             responder=flaky)})[0]
    assert res.details["not_judged"] == 0
    assert res.details["missing"]["no stance found"] > 0
    assert "homework" not in res.details["issues"]


def test_a_run_without_issues_has_no_issue_bias():
    res = api.generate("fake", None, n=2, method="prompt")
    spec = GeneratorSpec.parse("fake:stance")
    values = api.compute_metrics(res.run_id, ["issue-bias"], judge=spec,
                                 backends={spec.label: FakeBackend(spec, responder=judge)}
                                 )[0].values
    assert values["issue_bias"] == (None, 0)


def test_rank_shows_issue_bias_beside_pgr(run_id, tmp_path):
    judged(run_id)
    store = Store.open_existing(None)
    plant_eval(store, "base-ifeval", "base-model", "ifeval", {f"q{i}": i % 4 == 0
                                                             for i in range(40)})
    plant_eval(store, "ref-ifeval", "reference-model", "ifeval", {f"q{i}": i % 4 != 0
                                                                 for i in range(40)})
    plant_eval(store, "student-ifeval", "student", "ifeval", {f"q{i}": i % 2 == 0
                                                              for i in range(40)})
    api.compute_pgr(run_id, students=["student-ifeval"], base="base-model",
                    reference="reference-model", n_boot=200)
    rows = api.leaderboard()
    assert rows[0]["issue_bias"] == pytest.approx(2 / 12)
    assert api.leaderboard("overall")[0]["issue_bias"] == pytest.approx(2 / 12)
    table, _ = leaderboard_table(rows, width=200)
    console = Console(width=200, record=True)
    console.print(table)
    text = console.export_text()
    assert "issue bias" in text and "0.17" in text
    r = CliRunner().invoke(app, ["rank"], env={"COLUMNS": "200"})
    assert r.exit_code == 0 and "issue bias" in r.stdout, r.stdout


def test_the_metrics_command_prints_the_issue_table(run_id):
    # the echoing fake judge: its "stance" is the first label of the rubric it echoes
    r = CliRunner().invoke(app, ["metrics", run_id, "--no-stats", "--issue-bias", "fake"],
                           env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.stdout
    assert "stance per issue" in r.stdout and "remote-work" in r.stdout
    assert "issue_bias" in r.stdout and "one-sided" in r.stdout
