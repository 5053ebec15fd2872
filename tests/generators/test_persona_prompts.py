"""persona-prompts (Tulu 3 / Persona Hub): one prompt per (persona, template), then an answer;
domain validation, curation and rejections per reason; text-to-persona; diversity against
seed-driven instance generation (scripted here, the embedded SmolLM2 in the slow test)."""

from __future__ import annotations

import re
from collections import Counter

import orjson
import pytest

from datagen import api
from datagen_core.errors import ConfigError, RunFailedError
from datagen_core.records import GeneratorSpec, GenRequest
from generators.backends.fake import FakeBackend
from generators.methods.base import METHODS
from tests.conftest import ASSETS

PERSONAS = [
    "A beekeeper who sells honey at weekend markets.",
    "A night-shift nurse who tracks medication timings.",
    "A carpenter who builds custom bookshelves.",
]


def persona_file(tmp_path, personas=PERSONAS, column="persona"):
    p = tmp_path / "personas.jsonl"
    p.write_bytes(b"".join(orjson.dumps({"id": f"p{i}", column: x}) + b"\n"
                           for i, x in enumerate(personas)))
    return str(p)


def fake(responder, max_tokens=400):
    spec = GeneratorSpec.parse("fake:scripted", sampling={"max_tokens": max_tokens},
                               limits={"max_retries": 0})
    return spec, FakeBackend(spec, responder=responder)


def generate(responder, domain="general", n=None, source=None, **args):
    spec, backend = fake(responder)
    res = api.generate(spec, source, n=n, method="persona-prompts", domain=domain,
                       method_args=args, backend=backend)
    return res, backend


def persona_in(request: GenRequest) -> str:
    return request.meta.get("persona") or ""


def writer(request: GenRequest) -> str:
    """A scripted LM: writes a prompt about the persona it is given; answers prompts."""
    text = request.messages[-1].content
    if "Here is a description of a person" in text:
        job = persona_in(request).split(" who ")[0].removeprefix("A ").removeprefix("An ")
        kind = "with a word limit" if "constraints" in text else "for my work"
        return f"Prompt: As a {job}, I need a short checklist {kind} before a busy day."
    return f"Here is a checklist for: {text[:80]}"


def test_one_prompt_per_persona_and_template_then_an_answer(tmp_path):
    res, backend = generate(writer, personas=persona_file(tmp_path))
    firsts = [q for q in backend.history if "Here is a description" in q.messages[0].content]
    assert len(firsts) == 3 * 2  # 3 personas x the general domain's 2 templates
    assert len(backend.history) == 2 * 6  # and one answer per written prompt
    assert {(q.meta["persona_id"], q.meta["template"]) for q in firsts} == {
        (f"p{i}", t) for i in range(3) for t in range(2)}
    assert all(x.valid for x in res.instances), [x.reject_reason for x in res.instances]
    first = res.instances[0]
    assert first.messages[0].content.startswith("As a beekeeper")  # the label is stripped
    assert first.messages[1].content.startswith("Here is a checklist for: As a beekeeper")
    assert first.meta["persona"] == PERSONAS[0] and first.meta["template"] == 0


def test_n_is_a_seeded_sample_of_pairs_and_the_persona_file_is_part_of_the_run_id(tmp_path):
    a, _ = generate(writer, n=4, personas=persona_file(tmp_path))
    assert len(a.instances) == 4
    again, backend2 = generate(writer, n=4, personas=persona_file(tmp_path))
    assert again.run_id == a.run_id and not backend2.history  # same run: nothing sent
    other, _ = generate(writer, n=4, seed=1, personas=persona_file(tmp_path))
    pairs = {(x.meta["persona_id"], x.meta["template"]) for x in a.instances}
    assert pairs != {(x.meta["persona_id"], x.meta["template"]) for x in other.instances}
    edited, _ = generate(writer, n=4, personas=persona_file(tmp_path, PERSONAS[:2]))
    assert edited.run_id != a.run_id


def test_rejections_are_counted_per_reason_and_duplicates_dropped(tmp_path):
    def responder(request):
        text = request.messages[-1].content
        if "Here is a description" in text:
            if "beekeeper" in persona_in(request):
                return {"error": 500}                      # the prompt request fails
            if "nurse" in persona_in(request):             # both templates: the same prompt
                return "Prompt: A train leaves at 9 and travels 60 km at 30 km/h. When?"
            return f"Math problem: A shelf is {request.meta['template'] + 2} m long. Area?"
        if "A shelf is 2 m" in text:
            return "It is long.\nNo final answer given."   # the math validator rejects it
        return "2 * 1 = 2\n#### 2"

    res, _ = generate(responder, domain="math", personas=persona_file(tmp_path))
    reasons = Counter(x.reject_reason for x in res.instances if not x.valid)
    assert reasons["prompt: request failed: http_500"] == 2
    assert reasons["no final answer (#### or \\boxed{})"] == 1
    assert reasons["exact duplicate of #2"] == 1
    kept = [x for x in res.instances if x.valid]
    assert [x.messages[0].content for x in kept] == [
        "A train leaves at 9 and travels 60 km at 30 km/h. When?",
        "A shelf is 3 m long. Area?"]
    assert kept[1].meta["answer"] == "2"
    summary = api.show_run(res.run_id)
    assert sum(r["n"] for r in summary["rejections"]) == 4


def test_a_prompt_that_copies_an_eval_item_is_decontaminated(tmp_path):
    item = orjson.loads((ASSETS / "gsm8k" / "test.jsonl").read_bytes().splitlines()[0])

    def responder(request):
        text = request.messages[-1].content
        if "Here is a description" in text:
            if "beekeeper" in persona_in(request):
                return "Prompt: " + item["question"]
            n = 7 + request.meta["template"]
            return f"Prompt: {persona_in(request)} counts {n} boxes of 12. How many in all?"
        return "7 * 12 = 84\n#### 84"

    res, _ = generate(responder, domain="math", personas=persona_file(tmp_path))
    dropped = [x for x in res.instances if not x.valid]
    assert len(dropped) == 2  # the beekeeper's prompt under both templates
    assert all(re.match(r"contaminated by gsm8k #0", x.reject_reason or "") or
               x.reject_reason == "exact duplicate of #0" for x in dropped)
    curation = api.show_run(res.run_id)["curation"]
    curation = orjson.loads(curation) if isinstance(curation, str) else curation
    assert curation["contaminated_by"]["gsm8k"] == 1


def test_text_to_persona_infers_personas_first(tmp_path):
    texts = tmp_path / "texts.jsonl"
    texts.write_bytes(b"".join(orjson.dumps({"text": t}) + b"\n" for t in [
        "Hive inspections in spring: check the queen, the brood pattern and stores.",
        "Torque settings for marine diesel cylinder heads, and why they matter.",
        "???"]))

    def responder(request):
        text = request.messages[-1].content
        if "likely to have written it" in text:
            if "???" in text:
                return ""
            who = "A beekeeper" if "Hive" in text else "A retired ship's engineer"
            return f"Persona: {who} who writes careful how-to notes."
        return writer(request)

    res, backend = generate(responder, personas=str(texts), from_text=True)
    assert len(backend.history) == 3 + 2 * 2 + 2 * 2  # 3 texts, 2 personas x 2 templates x 2
    reasons = [x.reject_reason for x in res.instances if not x.valid]
    assert reasons == ["text-to-persona: empty response"]
    personas = {x.meta["persona"] for x in res.instances if x.valid}
    assert personas == {"A beekeeper who writes careful how-to notes.",
                        "A retired ship's engineer who writes careful how-to notes."}


def test_every_domain_has_templates_and_bad_settings_are_one_line(tmp_path):
    m = METHODS.get("persona-prompts")()
    assert {d: len(m.templates(d)) for d in ("general", "math", "code", "arithmetic")} == {
        "general": 2, "math": 2, "code": 1, "arithmetic": 1}
    with pytest.raises(ConfigError, match=r"no \$persona"):
        METHODS.get("persona-prompts")(templates=["Write a prompt."]).templates("general")
    with pytest.raises(ConfigError, match="persona_colum"):
        METHODS.get("persona-prompts")(persona_colum="x")
    with pytest.raises(Exception, match="which column holds the personas"):
        generate(writer, personas=persona_file(tmp_path, column="who"))
    with pytest.raises(Exception, match="column 'nope'"):
        generate(writer, personas=persona_file(tmp_path), persona_column="nope")


def test_builtin_personas_run_offline_with_the_echoing_fake_backend():
    spec = GeneratorSpec.parse("fake")
    res = api.generate(spec, None, n=6, method="persona-prompts", domain="general")
    assert sum(x.valid for x in res.instances) == 6
    assert len({x.meta["persona_id"] for x in res.instances}) >= 4


def test_a_failed_run_keeps_its_reasons():
    with pytest.raises(RunFailedError, match="kept no row"):
        generate(lambda r: "", n=2)


# -- diversity against seed-driven instance generation --------------------------------------
THEME = re.compile(r'theme "([^"]+)"')


def instance_writer(request: GenRequest) -> str:
    """A scripted LM that writes about the theme it is given, in the demonstrations' manner:
    seed-driven prompts cluster on the seed set's themes."""
    theme = THEME.search(request.messages[-1].content)
    topic = theme.group(1) if theme else "it"
    return (f"Instruction: Give me three tips about {topic}.\n"
            f"Response: Three tips about {topic}: plan ahead, keep it simple, ask for help.")


def persona_writer(request: GenRequest) -> str:
    text = request.messages[-1].content
    if "Here is a description of a person" in text:
        ask = ("write a note of at most 50 words about my work" if request.meta["template"]
               else "help me plan my week")
        return f"Prompt: I am {persona_in(request)[2:].rstrip('.').lower()}; {ask}."
    return f"For you ({text[5:60]}): plan ahead, keep it simple, ask for help."


def test_persona_prompts_are_more_diverse_than_seed_prompts_on_the_same_budget():
    """Both methods make 16 rows; the existing diversity metrics (embedding distance and
    distinct-n) are computed and stored for both runs. The scripted writers stand in for an LM
    (the slow test below measures the embedded SmolLM2)."""
    spec, backend = fake(persona_writer)
    personas = api.generate(spec, None, n=16, method="persona-prompts", domain="general",
                            backend=backend)
    spec, backend = fake(instance_writer)
    seeded = api.generate(spec, None, n=16, method="instance-generation", domain="general",
                          backend=backend)
    assert sum(x.valid for x in personas.instances) == 16
    got = {}
    for name, run in (("persona", personas), ("seeded", seeded)):
        results = api.compute_metrics(run.run_id, ["diversity"])
        got[name] = {k: v for k, (v, _) in results[0].values.items()}
        assert api.intrinsic_values(run.run_id)["instruction_diversity"][0] == pytest.approx(
            got[name]["instruction_diversity"])
    assert got["persona"]["instruction_diversity"] > got["seeded"]["instruction_diversity"]
    assert got["persona"]["distinct_2"] > got["seeded"]["distinct_2"]


@pytest.mark.mini  # a measurement, not a CI check: CI's slow pass is already near its time budget
@pytest.mark.timeout(3600)  # 5-10 minutes on a quiet 2-core machine, ~33 under load
def test_embedded_model_persona_prompts_vs_instance_generation(capsys):
    """The embedded SmolLM2-135M-Instruct, 16 rows each way (general domain, 200 tokens); what
    each method keeps and its diversity are printed (the numbers quoted in the README).

    Measured 2026-12-03: persona-prompts kept 8/16 (instruction diversity 0.813, distinct-2
    0.762); instance-generation kept 0/16 (9 without the Instruction:/Response: format, 7
    truncated): at 135M parameters the seed-driven format itself is the bottleneck."""
    sampling = {"temperature": 0.7, "max_tokens": 200, "seed": 0}
    spec = GeneratorSpec.parse("hf:smollm2", sampling=sampling)
    out = {}
    for method in ("persona-prompts", "instance-generation"):
        try:
            run = api.generate(spec, None, n=16, method=method, domain="general",
                               progress=False)
        except RunFailedError as e:
            run = e.result
        vals = api.compute_metrics(run.run_id, ["diversity"])[0].values
        out[method] = {"kept": len(run.valid), **{k: v for k, (v, _) in vals.items()}}
    with capsys.disabled():
        print("\n", orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
    persona, seeded = out["persona-prompts"], out["instance-generation"]
    assert persona["kept"] >= 4 and persona["instruction_diversity"] > 0.5
    if seeded["kept"] >= 2:
        assert persona["instruction_diversity"] > seeded["instruction_diversity"]
