"""IFEval sentence and capital-word counting agrees with the reference (NLTK punkt and
``nltk.word_tokenize``, as google-research ``instruction_following_eval`` counts) on tricky
cases: replies wrapped in quotes, abbreviations, contractions (issue 12, "Scoring fidelity").
Every expected count below is what the reference gives (NLTK 3.10 with punkt's English
parameters); the differences that remain are listed in :mod:`students.tasks.ifeval_text`."""

from __future__ import annotations

import pytest

from datagen_core.errors import InputError
from generators.domains import ifeval_checks as checks
from generators.domains.ifeval_text import capital_words, count_sentences

SEVENTEEN = '"' + " ".join(f"Sentence number {i} is here." for i in range(1, 18)) + '"'

# (text, the reference's sentence count)
SENTENCES = [
    (SEVENTEEN, 17),
    ('"First one. Second one. Third one."', 3),
    ("“Curly quotes. Still three. Yes.”", 3),
    ('He said "stop." Then he left.', 2),
    ("Dr. Smith came. He saw. He left!", 3),
    ("The U.S. Army is big. It is old.", 2),
    ("I live in the U.S. The weather is nice.", 2),
    ("Fruits, e.g. apples, are good. I eat them.", 3),  # e.g. is not a punkt abbreviation
    ("That is, i.e. the best. Really.", 3),
    ("Mr. and Mrs. Jones arrived at 5 p.m. on Monday.", 1),
    ("Acme Inc. makes things. They sell them.", 2),
    ("It costs $3.50 today. Tomorrow it costs more.", 2),
    ("Title line\nNo punctuation here\nAnd none here", 1),  # line breaks end nothing
    ("Really?? Yes.", 2),
    ("Is that so?!", 2),  # punkt counts the last mark of a text's final '?!' on its own
    ("Wow!!! Great.", 2),
    ("He left... The end.", 2),
    ("Steps:\n1. Mix the flour.\n2. Bake it.", 4),  # '1.' before a capital is a sentence
    ("I can't go. Don't ask. It's fine.", 3),
    ("NASA's rocket flew. It was fast.", 2),
    ("Version 2.0 is out. Get it now.", 2),
    ("(This is in brackets.) This is not.", 2),
]

# (text, the reference's capital words: [w for w in nltk.word_tokenize(text) if w.isupper()])
CAPITALS = [
    ("NASA's rocket", ["NASA"]),
    ("NASA’s rocket", ["NASA"]),
    ("The U.S. and the U.K.", ["U.S.", "U.K"]),
    ("U.S.A. rules", ["U.S.A"]),
    ("DON'T STOP", ["DO", "N'T", "STOP"]),
    ("AT&T and IBM", ["AT", "T", "IBM"]),
    ("ESA-LED mission", ["ESA-LED"]),
    ("I think so", ["I"]),
    ("**IMPORTANT** note", ["**IMPORTANT**"]),
    ("(NASA) and [ESA]", ["NASA", "ESA"]),
    ("Hello WORLD, HI!", ["WORLD", "HI"]),
    ("e.g. nothing here", []),
    ("CO2 and H2O levels", ["CO2", "H2O"]),
    ("THE END.", ["THE", "END"]),
]


@pytest.mark.parametrize(("text", "count"), SENTENCES, ids=[t[:30] for t, _ in SENTENCES])
def test_sentences_are_counted_as_the_reference_counts_them(text, count):
    assert count_sentences(text) == count


@pytest.mark.parametrize(("text", "words"), CAPITALS, ids=[t for t, _ in CAPITALS])
def test_capital_words_are_counted_as_the_reference_counts_them(text, words):
    assert len(capital_words(text)) == len(words)


def test_a_quoted_17_sentence_reply_has_at_least_17_sentences():
    kwargs = {"num_sentences": 17, "relation": "at least"}
    assert checks.follows("length_constraints:number_sentences", kwargs, SEVENTEEN)
    assert not checks.follows("length_constraints:number_sentences",
                              {"num_sentences": 17, "relation": "less than"}, SEVENTEEN)


def test_capital_word_frequency_counts_nasas_once_and_us_as_one_word():
    at_least_2 = {"capital_frequency": 2, "capital_relation": "at least"}
    less_than_2 = {"capital_frequency": 2, "capital_relation": "less than"}
    iid = "change_case:capital_word_frequency"
    assert checks.follows(iid, at_least_2, "NASA's budget and ESA's budget.")
    assert checks.follows(iid, less_than_2, "Rates in the U.S. rose.")
    assert not checks.follows(iid, less_than_2, "Rates in the U.S. and NASA's budget rose.")


def test_letter_frequency_counts_a_non_letter_character_literally():
    # rows 1122 ('#', at least 4) and 1129 ('!', at least 6) of the data set
    iid = "keywords:letter_frequency"
    hashtags = {"letter": "#", "let_frequency": 4, "let_relation": "at least"}
    assert checks.follows(iid, hashtags, "new drop #summer #fun #style #playboy")
    assert not checks.follows(iid, hashtags, "new drop #summer #fun #style")
    bangs = {"letter": "!", "let_frequency": 6, "let_relation": "at least"}
    assert checks.follows(iid, bangs, "Wow! Yum! Cold! Sweet! Gentle! Buy it!")
    assert not checks.follows(iid, bangs, "Wow! Yum! Cold! Sweet! Gentle.")


@pytest.mark.parametrize("letter", ["", "ab", " "])
def test_a_letter_argument_that_is_not_one_character_is_refused(letter):
    # the reference would silently count a random letter instead
    with pytest.raises(InputError, match="one character"):
        checks.validate("keywords:letter_frequency",
                        {"letter": letter, "let_frequency": 2, "let_relation": "at least"})
