"""The 25 IFEval instruction checks, written here to run offline.

They follow the checks of google-research ``instruction_following_eval`` (Zhou et al., 2023),
check for check, with these deliberate differences:

- Sentences are counted, and capital words found, by :mod:`students.tasks.ifeval_text`, which
  applies punkt's rules with punkt's English lists instead of loading NLTK's punkt data (a
  download at run time, impossible offline). Measured against NLTK punkt and
  ``nltk.word_tokenize`` on 7,163 texts (HH-RLHF turns, IFEval prompts bare and wrapped in
  quotes, GSM8K solutions): sentence counts agree on 99.5% (pysbd, used before: 85.6%; it
  counted a reply wrapped in quotes as one sentence), capital-word counts on 99.99% (a word
  regex, used before: 85.0%; it missed ``NASA's`` and split ``U.S.``). The remaining sentence
  differences come from punkt's word-frequency (orthographic) statistics, listed in that module.
- ``keywords:letter_frequency`` counts the character it is given, letters or not (``#`` counts
  hashtags, ``!`` exclamation marks), as the current google-research checker does. The first
  release of that checker, and lm-eval's copy of it, replace an argument outside ``a-z`` with a
  *random* letter, so their verdicts for the two such rows of the data set (``#``, ``!``) are not
  reproducible; an argument that is not exactly one character is an :class:`InputError` here,
  where they also draw a random letter.
- Keywords, forbidden words, section splitters and postscript markers are matched literally
  (``re.escape``); the original compiles them as regular expressions, which only differs for
  text with regex metacharacters.

Language detection is langdetect (profiles ship in the wheel), seeded for determinism; as in the
original, text whose language cannot be detected counts as following a language instruction.

Each check is ``check(response, **kwargs) -> bool`` with the data set's keyword names. An
instruction id without a check, or kwargs a check does not take, is an :class:`InputError`
(raised when the data is loaded, before anything is generated), never a silent pass.
"""

from __future__ import annotations

import collections
import inspect
import json
import re
from collections.abc import Callable
from typing import Any

from datagen_core.errors import InputError
from generators.domains import ifeval_text

Check = Callable[..., bool]
CHECKS: dict[str, Check] = {}

RELATIONS = ("less than", "at least")
CONSTRAINED_RESPONSES = ("My answer is yes.", "My answer is no.", "My answer is maybe.")


def check(instruction_id: str) -> Callable[[Check], Check]:
    def deco(fn: Check) -> Check:
        CHECKS[instruction_id] = fn
        return fn

    return deco


def _compare(count: int, relation: str, threshold: int) -> bool:
    if relation == "less than":
        return count < threshold
    if relation == "at least":
        return count >= threshold
    raise InputError(f"IFEval relation must be one of {RELATIONS}, got {relation!r}")


def count_sentences(text: str) -> int:
    """Sentences as the reference's NLTK punkt counts them (:mod:`students.tasks.ifeval_text`)."""
    return ifeval_text.count_sentences(text)


def count_words(text: str) -> int:
    """Runs of word characters, as NLTK's ``RegexpTokenizer(r"\\w+")`` counts them."""
    return len(re.findall(r"\w+", text))


def detect_language(text: str) -> str | None:
    """ISO 639-1 code of the text's language, or None when it cannot be told."""
    from langdetect import DetectorFactory, LangDetectException, detect

    DetectorFactory.seed = 0  # langdetect samples; a fixed seed makes a verdict reproducible
    try:
        return str(detect(text))
    except LangDetectException:
        return None


# -- keywords --------------------------------------------------------------------------------
@check("keywords:existence")
def keywords_existence(response: str, *, keywords: list[str]) -> bool:
    return all(re.search(re.escape(k), response, re.IGNORECASE) for k in keywords)


@check("keywords:frequency")
def keywords_frequency(response: str, *, keyword: str, frequency: int, relation: str) -> bool:
    found = len(re.findall(re.escape(keyword), response, re.IGNORECASE))
    return _compare(found, relation, frequency)


@check("keywords:forbidden_words")
def forbidden_words(response: str, *, forbidden_words: list[str]) -> bool:
    return not any(re.search(rf"\b{re.escape(w)}\b", response, re.IGNORECASE)
                   for w in forbidden_words)


@check("keywords:letter_frequency")
def letter_frequency(response: str, *, letter: str, let_frequency: int,
                     let_relation: str) -> bool:
    """Occurrences of one character, case-insensitively; a non-letter (``#``) is counted too."""
    counts = collections.Counter(response.lower())
    return _compare(counts[letter.strip().lower()], let_relation, let_frequency)


# -- language and case -------------------------------------------------------------------------
@check("language:response_language")
def response_language(response: str, *, language: str) -> bool:
    found = detect_language(response)
    return found is None or found == language


@check("change_case:english_capital")
def english_capital(response: str) -> bool:
    return response.isupper() and detect_language(response) in ("en", None)


@check("change_case:english_lowercase")
def english_lowercase(response: str) -> bool:
    return response.islower() and detect_language(response) in ("en", None)


@check("change_case:capital_word_frequency")
def capital_word_frequency(response: str, *, capital_frequency: int,
                           capital_relation: str) -> bool:
    """Words in all capitals, as over ``nltk.word_tokenize`` tokens: ``NASA's`` and ``U.S.``
    count once each."""
    return _compare(len(ifeval_text.capital_words(response)), capital_relation, capital_frequency)


# -- length ----------------------------------------------------------------------------------
@check("length_constraints:number_sentences")
def number_sentences(response: str, *, num_sentences: int, relation: str) -> bool:
    return _compare(count_sentences(response), relation, num_sentences)


@check("length_constraints:number_words")
def number_words(response: str, *, num_words: int, relation: str) -> bool:
    return _compare(count_words(response), relation, num_words)


@check("length_constraints:number_paragraphs")
def number_paragraphs(response: str, *, num_paragraphs: int) -> bool:
    """Paragraphs are separated by the markdown divider ``***``."""
    parts = re.split(r"\s?\*\*\*\s?", response)
    count = len(parts)
    for i, part in enumerate(parts):
        if not part.strip():
            if i in (0, len(parts) - 1):
                count -= 1
            else:
                return False  # an empty paragraph between two dividers
    return count == num_paragraphs


@check("length_constraints:nth_paragraph_first_word")
def nth_paragraph_first_word(response: str, *, num_paragraphs: int, nth_paragraph: int,
                             first_word: str) -> bool:
    """Paragraphs are separated by blank lines (``\\n\\n``)."""
    parts = re.split(r"\n\n", response)
    count = sum(1 for p in parts if p.strip())
    if nth_paragraph > count:
        return False
    paragraph = parts[nth_paragraph - 1].strip()
    if not paragraph:
        return False
    word = paragraph.split()[0].strip().lstrip("'").lstrip('"')
    first = ""
    for ch in word:
        if ch in {".", ",", "?", "!", "'", '"'}:
            break
        first += ch.lower()
    return count == num_paragraphs and first == first_word.strip().lower()


# -- detectable content and format -------------------------------------------------------------
@check("detectable_content:number_placeholders")
def number_placeholders(response: str, *, num_placeholders: int) -> bool:
    return len(re.findall(r"\[.*?\]", response)) >= num_placeholders


@check("detectable_content:postscript")
def postscript(response: str, *, postscript_marker: str) -> bool:
    text = response.lower()
    if postscript_marker == "P.P.S":
        pattern = r"\s*p\.\s?p\.\s?s.*$"
    elif postscript_marker == "P.S.":
        pattern = r"\s*p\.\s?s\..*$"
    else:
        pattern = r"\s*" + re.escape(postscript_marker.lower()) + r".*$"
    return bool(re.findall(pattern, text, flags=re.MULTILINE))


@check("detectable_format:number_bullet_lists")
def number_bullet_lists(response: str, *, num_bullets: int) -> bool:
    stars = re.findall(r"^\s*\*[^\*].*$", response, flags=re.MULTILINE)
    dashes = re.findall(r"^\s*-.*$", response, flags=re.MULTILINE)
    return len(stars) + len(dashes) == num_bullets


@check("detectable_format:constrained_response")
def constrained_response(response: str) -> bool:
    text = response.strip()
    return any(option in text for option in CONSTRAINED_RESPONSES)


@check("detectable_format:number_highlighted_sections")
def number_highlighted_sections(response: str, *, num_highlights: int) -> bool:
    count = sum(1 for h in re.findall(r"\*[^\n\*]*\*", response) if h.strip("*").strip())
    count += sum(1 for h in re.findall(r"\*\*[^\n\*]*\*\*", response)
                 if h.removeprefix("**").removesuffix("**").strip())
    return count >= num_highlights


@check("detectable_format:multiple_sections")
def multiple_sections(response: str, *, section_spliter: str, num_sections: int) -> bool:
    parts = re.split(r"\s?" + re.escape(section_spliter) + r"\s?\d+\s?", response)
    return len(parts) - 1 >= num_sections


@check("detectable_format:json_format")
def json_format(response: str) -> bool:
    text = response.strip()
    for fence in ("```json", "```Json", "```JSON", "```"):
        text = text.removeprefix(fence)
    text = text.removesuffix("```").strip()
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


@check("detectable_format:title")
def title(response: str) -> bool:
    return any(t.lstrip("<").rstrip(">").strip() for t in re.findall(r"<<[^\n]+>>", response))


# -- combinations, start and end, punctuation ------------------------------------------------------
@check("combination:two_responses")
def two_responses(response: str) -> bool:
    """Two different responses separated by six asterisks."""
    parts = response.split("******")
    kept = []
    for i, part in enumerate(parts):
        if part.strip():
            kept.append(part)
        elif i not in (0, len(parts) - 1):
            return False
    return len(kept) == 2 and kept[0].strip() != kept[1].strip()


@check("combination:repeat_prompt")
def repeat_prompt(response: str, *, prompt_to_repeat: str) -> bool:
    return response.strip().lower().startswith(prompt_to_repeat.strip().lower())


@check("startend:end_checker")
def end_checker(response: str, *, end_phrase: str) -> bool:
    return response.strip().strip('"').lower().endswith(end_phrase.strip().lower())


@check("startend:quotation")
def quotation(response: str) -> bool:
    text = response.strip()
    return len(text) > 1 and text[0] == '"' and text[-1] == '"'


@check("punctuation:no_comma")
def no_comma(response: str) -> bool:
    return "," not in response


# -- running checks ----------------------------------------------------------------------------
def clean_kwargs(kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """The Hub copy of IFEval gives every row every keyword, most of them None: drop those."""
    return {k: v for k, v in (kwargs or {}).items() if v is not None}


def validate(instruction_id: str, kwargs: dict[str, Any]) -> None:
    """Raise InputError unless ``instruction_id`` has a check that takes exactly ``kwargs``."""
    fn = CHECKS.get(instruction_id)
    if fn is None:
        raise InputError(f"IFEval instruction {instruction_id!r} has no check here; known: "
                         f"{', '.join(sorted(CHECKS))}")
    try:
        inspect.signature(fn).bind("", **kwargs)
    except TypeError as e:
        raise InputError(f"IFEval instruction {instruction_id!r}: bad kwargs {kwargs}: {e}") \
            from None
    letter = kwargs.get("letter")
    if instruction_id == "keywords:letter_frequency" and (
            not isinstance(letter, str) or len(letter.strip()) != 1):
        raise InputError(f"IFEval letter_frequency needs one character, got {letter!r} (the "
                         "reference would count a random letter instead)")


def loose_variants(response: str) -> list[str]:
    """The paper's loose transformations: the response with its first line, last line or both
    removed, each also with markdown asterisks stripped (the response itself included)."""
    lines = response.split("\n")
    variants = [response, "\n".join(lines[1:]).strip(), "\n".join(lines[:-1]).strip(),
                "\n".join(lines[1:-1]).strip()]
    return variants + [v.replace("*", "") for v in variants]


def follows(instruction_id: str, kwargs: dict[str, Any], response: str,
            loose: bool = False) -> bool:
    """Whether ``response`` follows one instruction, strictly or loosely."""
    fn = CHECKS[instruction_id]
    candidates = loose_variants(response) if loose else [response]
    return any(c.strip() and fn(c, **kwargs) for c in candidates)
