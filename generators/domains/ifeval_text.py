"""Sentence and capital-word counting for IFEval, matched to the reference's NLTK tools offline.

The reference (google-research ``instruction_following_eval``) counts sentences with NLTK's
punkt English model and capital words over ``nltk.word_tokenize`` tokens; both need punkt data
that is downloaded at run time. Here:

:func:`count_sentences` applies punkt's decision rules (Kiss & Strunk, 2006, as NLTK runs them)
with punkt's English abbreviation, collocation and sentence-starter lists (the parameters of
NLTK's ``punkt_tab/english``, Apache-2.0): a candidate boundary is ``.``, ``?`` or ``!``
(optionally followed by closing quotes or brackets) before whitespace; ``?`` and ``!`` always
end a sentence; a period ends one unless the word is a known abbreviation (``Dr.``, ``U.S.``,
``Inc.``) or an initial, or a number before a lower-case word, or the pair is a known
collocation; after an abbreviation or initial, a capitalised sentence starter (``The``, ``He``,
``However``) ends it after all. Line breaks do not end sentences, and quotes do not hide them:
``"One. Two. Three."`` is three sentences, as in punkt; and, as punkt does, the last sentence
of a text that ends in several marks ending in ``?`` or ``!`` (``Really??``, ``Wow!!!``) is
counted twice, the last mark on its own. Like punkt, ``e.g.`` and ``i.e.`` are not
in the English abbreviation list, so they end a sentence; a numbered list item ``1.`` followed
by a capitalised word counts as a sentence of its own.

Known differences from punkt (it has no word-frequency table here): punkt's orthographic
heuristic also decides, from 20,000 word types' capitalisation statistics, that some other
capitalised words after an abbreviation or initial start a sentence (``Mr. Smith left. Jan.
Meanwhile`` agrees; ``approx. Next`` may not), and that some lower-case words after a number or
ellipsis do; here only the sentence-starter list and the word's case decide.

:func:`capital_words` follows ``nltk.word_tokenize``'s Treebank rules for what matters to
``isupper()``: clitics split off (``NASA's`` -> ``NASA`` + ``'s``; ``DON'T`` -> ``DO`` +
``N'T``), periods inside a word kept (``U.S.`` is one word), hyphenated words whole
(``ESA-LED``), and ``& # @ $ % ; , ( ) [ ] { } < > " ?  !`` split off (``AT&T`` is two
capital words). Difference: the reference's tokenizer also splits a sentence-final period that
our whitespace-based split only strips, which changes no capital-word count.
"""

from __future__ import annotations

import re

__all__ = ["capital_words", "count_sentences", "sentences"]


def _words(text: str) -> list[str]:
    return text.split()


# punkt_tab/english (NLTK data, Apache-2.0): abbreviation types, lower-cased, without the period
_ABBREVIATIONS = frozenset(_words("""
a.a a.c a.d a.g a.h a.m a.m.e a.s a.t adm ala ariz aug ave b.f b.v bros c c.i.t c.o.m.b c.v
calif chg cie co col colo conn corp cos ct d d.c d.h d.w dec dr e e.f e.h e.l e.m f f.g f.j feb
fla fri ft g g.d g.f g.k ga gen h h.c h.f h.m i.m.s ill inc j.b j.c j.j j.k j.p j.r jan jr k kan
ky l l.a l.f l.p lt ltd m m.b.a m.d.c m.j maj messrs mg mich minn mr mrs ms n n.c n.d n.h n.j
n.m n.v n.y nev nov oct ok okla ore p p.a.m p.m pa ph.d prof r r.a r.h r.i r.j r.k r.t rep reps
s s.a s.a.y s.c s.g s.p.a s.s sen sep sept sr st sw t t.j tenn tues u.k u.n u.s u.s.a u.s.s.r v
va vs vt w w.c w.r w.va w.w wash wed wis yr
"""))
_SENTENCE_STARTERS = frozenset(_words("""
according although among both but despite even he however i if in indeed instead it many
meanwhile moreover most nevertheless nonetheless nor sales separately similarly since so some
the there these they this though thus under when while yet
"""))
_COLLOCATIONS = frozenset(tuple(pair.split("|")) for pair in _words("""
#|abreast #|aes #|business #|cbot #|colgate #|commodities #|cooper #|corrections #|credit
#|dividend #|financing #|genentech #|henley #|insider #|international #|leisure #|letters
#|notable #|pay-fone #|pegasus #|pepper #|review #|rj #|wedgestone #|who #|zimmer b|edelman
b|levine b|smith b|stewart
"""))

_CHUNK = re.compile(r"\S+")
_END = re.compile(r"([.?!]+)[\"'”’)\]}*_]*$")
_LEADING = re.compile(r"^[(\"`{\[:;&#*@)}\]\-,“‘'_]+")
_NUMBER = re.compile(r"^-?[.,]?\d[\d,.\-]*\.?$")
_INITIAL = re.compile(r"^[^\W\d]$")
_WORD_END = re.compile(r"[?!)\";}\]*:@'({\[,’]")


def _type(word: str) -> str:
    """A word's punkt type: lower-cased, numbers as one type ('#'), leading punctuation off."""
    word = _LEADING.sub("", word).lower()
    return "#" if _NUMBER.match(word) else word


def _next_word(chunk: str) -> tuple[str, bool, bool]:
    """The next word's type and whether it starts upper- / lower-case (``I'm`` is ``i``)."""
    word = _WORD_END.split(_LEADING.sub("", chunk), 1)[0]
    first = word[:1]
    return _type(word.rstrip(".")), first.isupper(), first.islower()


def _ends_sentence(chunk: str, following: str) -> bool:
    """Whether a chunk ending in ``.``, ``?`` or ``!`` ends a sentence before ``following``."""
    end = _END.search(chunk)
    if end is None:
        return False
    marks = end[1]
    if marks[-1] in "?!":
        return True
    word = chunk[: end.start()]
    typ = _type(word)
    nxt, upper, lower = _next_word(following)
    if (typ, nxt) in _COLLOCATIONS:
        return False
    starter = upper and nxt in _SENTENCE_STARTERS
    if typ in _ABBREVIATIONS:  # initials in the list too: "t. But" goes on
        return starter and not _INITIAL.match(typ)
    if len(marks) > 1 or typ.rsplit("-", 1)[-1] in _ABBREVIATIONS:  # "...", "ex-gov."
        return starter
    if _INITIAL.match(typ):  # not a listed abbreviation: ends before a capitalised word
        return upper
    if typ == "#":
        return not lower
    return True


def sentences(text: str) -> list[str]:
    """The text split into sentences by the rules in the module docstring."""
    chunks = list(_CHUNK.finditer(text))
    out: list[str] = []
    start = 0
    for i, chunk in enumerate(chunks[:-1]):
        if _ends_sentence(chunk[0], chunks[i + 1][0]):
            out.append(text[start : chunk.end()].strip())
            start = chunk.end()
    rest = text[start:].strip()
    end = _END.search(rest)
    if end and len(end[1]) > 1 and end[1][-1] in "?!" and end.end() == len(rest):
        # punkt ends the text's last sentence at its next-to-last mark: "Really??" is two
        cut = end.start() + len(end[1]) - 1
        out.extend([rest[:cut], rest[cut:]])
    elif rest:
        out.append(rest)
    return [s for s in out if s]


def count_sentences(text: str) -> int:
    return len(sentences(text))


_SPLIT_OFF = re.compile(r"[\s&#@$%;,()\[\]{}<>\"?!“”«»]+")
_CLITIC = re.compile(r"^(.+?)((?:n['’]t|['’](?:s|m|d|ll|re|ve)))$", re.IGNORECASE)
_EDGE = "'‘’`:.*_"


def capital_words(text: str) -> list[str]:
    """Words in all capitals, as ``[w for w in nltk.word_tokenize(text) if w.isupper()]``."""
    found: list[str] = []
    for piece in _SPLIT_OFF.split(text):
        word = piece.strip(_EDGE)
        clitic = _CLITIC.match(word)
        parts = [clitic[1], clitic[2]] if clitic else [word]
        found.extend(p for p in parts if p.isupper())
    return found
