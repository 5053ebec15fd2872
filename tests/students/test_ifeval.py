"""IFEval checks: every instruction id of the data set has a check that accepts a response that
follows it and rejects one that does not; loose scoring forgives a preamble and markdown."""

from __future__ import annotations

import orjson
import pytest

from datagen_core.errors import InputError
from datagen_core.records import GenResponse
from generators.domains import ifeval_checks as checks
from students.tasks import ScoreContext, get_task
from tests.conftest import ASSETS

LOREM = " ".join(["word"] * 40)

# (instruction id, kwargs, a response that follows it, one that does not)
CASES = [
    ("keywords:existence", {"keywords": ["banana", "kiwi"]},
     "A Banana and a kiwi.", "Only a banana here."),
    ("keywords:frequency", {"keyword": "cat", "frequency": 3, "relation": "at least"},
     "cat, Cat and CAT.", "one cat and one dog"),
    ("keywords:frequency", {"keyword": "cat", "frequency": 2, "relation": "less than"},
     "one cat", "cat cat"),
    ("keywords:forbidden_words", {"forbidden_words": ["sun", "moon"]},
     "The sunny sky.", "The Moon rose."),
    ("keywords:letter_frequency", {"letter": "z", "let_frequency": 3, "let_relation": "at least"},
     "Zoe zips and zaps.", "Zoe sleeps."),
    ("keywords:letter_frequency", {"letter": "q", "let_frequency": 2, "let_relation": "less than"},
     "A quiet day.", "Quick quiet queen."),
    ("language:response_language", {"language": "de"},
     "Ich habe heute keine Zeit, weil ich arbeiten muss und das Wetter schlecht ist.",
     "I have no time today because I have to work and the weather is bad."),
    ("change_case:english_capital", {},
     "THIS IS A SHOUTED ENGLISH SENTENCE ABOUT THE WEATHER TODAY.",
     "This is a normal English sentence about the weather today."),
    ("change_case:english_lowercase", {},
     "this is a quiet english sentence about the weather today.",
     "This is a normal English sentence about the weather today."),
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "at least"},
     "The NASA and ESA-LED missions.", "The NASA mission."),
    ("change_case:capital_word_frequency", {"capital_frequency": 2,
                                            "capital_relation": "less than"},
     "One WORD only.", "TWO LOUD words."),
    ("length_constraints:number_sentences", {"num_sentences": 3, "relation": "at least"},
     "Dr. Smith came. He saw. He left!", "Dr. Smith came. He left."),
    ("length_constraints:number_sentences", {"num_sentences": 2, "relation": "less than"},
     "Just one sentence, Mr. Jones.", "First. Second."),
    ("length_constraints:number_words", {"num_words": 40, "relation": "at least"},
     LOREM, "too few words"),
    ("length_constraints:number_words", {"num_words": 5, "relation": "less than"},
     "four words right here", "five words are right here"),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 3},
     "One.\n***\nTwo.\n***\nThree.", "One.\n***\nTwo."),
    ("length_constraints:nth_paragraph_first_word",
     {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "jasper"},
     "Intro here.\n\nJasper, the cat, sleeps.", "Intro here.\n\nThe cat sleeps."),
    ("detectable_content:number_placeholders", {"num_placeholders": 2},
     "Dear [name], at [address].", "Dear [name]."),
    ("detectable_content:postscript", {"postscript_marker": "P.S."},
     "Body.\n\nP.S. See you soon.", "Body without a postscript."),
    ("detectable_content:postscript", {"postscript_marker": "P.P.S"},
     "Body.\n\nP.P.S. One more thing.", "Body.\n\nP.S. Only one."),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2},
     "* one\n- two", "* one\n* two\n* three"),
    ("detectable_format:constrained_response", {},
     "My answer is maybe.", "Perhaps."),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2},
     "*first* and **second**", "*only one* here"),
    ("detectable_format:multiple_sections", {"section_spliter": "SECTION", "num_sections": 2},
     "SECTION 1\nintro\nSECTION 2\nbody", "SECTION 1\nall in one"),
    ("detectable_format:json_format", {},
     '```json\n{"a": 1}\n```', "{'a': 1"),
    ("detectable_format:title", {},
     "<<A Poem>>\nRoses are red.", "A Poem\nRoses are red."),
    ("combination:two_responses", {},
     "First answer.\n******\nSecond answer.", "Same.\n******\nSame."),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Write a haiku."},
     "Write a haiku. Leaves fall on water.", "Leaves fall on water."),
    ("startend:end_checker", {"end_phrase": "Peace!"},
     'We are done. Peace!"', "Peace! We are done."),
    ("startend:quotation", {},
     '"All of it quoted."', 'Not "all" of it quoted.'),
    ("punctuation:no_comma", {},
     "No commas here at all.", "Well, one comma."),
]


def test_every_instruction_id_in_the_data_has_a_check_and_a_test():
    ids: set[str] = set()
    for line in (ASSETS / "ifeval" / "input_data.jsonl").read_bytes().splitlines():
        ids.update(orjson.loads(line)["instruction_id_list"])
    assert ids == set(checks.CHECKS)
    assert {c[0] for c in CASES} == ids


@pytest.mark.parametrize(("iid", "kwargs", "good", "bad"), CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_check_accepts_a_following_response_and_rejects_a_violating_one(iid, kwargs, good, bad):
    checks.validate(iid, kwargs)
    assert checks.follows(iid, kwargs, good) is True
    assert checks.follows(iid, kwargs, bad) is False


def test_undetectable_language_counts_as_followed_as_in_the_original():
    assert checks.follows("language:response_language", {"language": "fr"}, "12345 !!!")


def test_unknown_instruction_or_kwargs_is_an_explicit_error():
    with pytest.raises(InputError, match="no check"):
        checks.validate("detectable_format:haiku", {})
    with pytest.raises(InputError, match="bad kwargs"):
        checks.validate("punctuation:no_comma", {"num_commas": 3})
    with pytest.raises(InputError, match="relation"):
        checks.follows("length_constraints:number_words", {"num_words": 3, "relation": "about"},
                       "a b c")


def test_hub_rows_with_none_kwargs_are_cleaned():
    assert checks.clean_kwargs({"num_words": 3, "relation": "at least", "keywords": None}) == {
        "num_words": 3, "relation": "at least"}


def test_loose_forgives_a_preamble_and_markdown_strict_does_not():
    kw = {"end_phrase": "Is there anything else I can help with?"}
    bold_end = "Here it is.\n**Is there anything else I can help with?**"
    assert not checks.follows("startend:end_checker", kw, bold_end)
    assert checks.follows("startend:end_checker", kw, bold_end, loose=True)
    quoted = 'Sure, here you go:\n"The whole answer."'
    assert not checks.follows("startend:quotation", {}, quoted)
    assert checks.follows("startend:quotation", {}, quoted, loose=True)


async def test_ifeval_task_scores_strict_and_loose_per_prompt_and_instruction(monkeypatch):
    monkeypatch.setenv("DATAGEN_EVAL_DIR", str(ASSETS))
    task = get_task("ifeval")
    items, _ = task.load(limit=2)
    assert items[0].item_id == "1000" and items[1].item_id == "1001"
    # item 1001: no commas; item 1000: no commas, 3 highlights, at least 300 words
    answers = ["Sure, here:\n" + "*a* *b* *c* " + " ".join(["word"] * 300),
               "Thou shalt travel, and rest."]
    responses = [GenResponse(key=str(i), text=a) for i, a in enumerate(answers)]
    scores = await task.score(items, responses, ScoreContext())
    assert scores[0].detail["strict"] == [False, True, True]  # the preamble's comma
    assert scores[0].detail["loose"] == [True, True, True]  # first line removed
    assert scores[1].detail["strict"] == [False]
    assert [s.score for s in scores] == [0.0, 0.0]
    assert task.aggregate(scores) == {"prompt_strict": 0.0, "prompt_loose": 0.5,
                                      "inst_strict": 0.5, "inst_loose": 0.75}
