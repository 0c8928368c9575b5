"""Context faithfulness: are the names, numbers and dates a caption asserts on the page the captioner was given?

A contextual captioner's own failure is using the page wrongly: a person, a place or a figure that is not on
the page. No reference metric sees it (a wrong name costs one n-gram). The rule here is deliberately simple
and documented (no NER model can be downloaded in this environment); it finds a caption's *assertions*:

- **names**: maximal runs of capitalised words (`Kenji Watanabe`, `Lake Bled`, `Aurora X2`). A run that
  opens a sentence (or a quotation, or what follows a colon) loses its leading function words (`The`, `In`,
  `Our`, …) and is dropped when one word is left, since a capital there says nothing;
- **numbers**: digit groups (`40`, `1,200`, `3.5`) and the number words one … twenty, thirty … ninety,
  hundred, thousand, million, each normalised to its value, so `11 hours` matches `eleven hours`;
- **dates**: years 1800–2099, month names, weekdays and ISO dates (`2024-05-01`).

An assertion is *supported* when it occurs, as whole words and case-insensitively, in the context: the
page text, the alt text and the title as the captioner's prompt rendered them (`context_of` takes them
from the prompt, placeholders removed). Per caption: asserted, supported; over a set of captions:

- faithfulness = Σ supported / Σ asserted (captions asserting nothing add nothing);
- hallucination rate = the share of captions asserting at least one unsupported name, number or date;
- context use = the mean number of distinct supported assertions per caption (how much of the page a
  caption carries; removing the page-derived sentences lowers it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NUMBER_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
NUMBER_WORDS.update({"thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
                     "ninety": 90, "hundred": 100, "thousand": 1000, "million": 1_000_000})
MONTHS = ("january february march april may june july august september october november december").split()
WEEKDAYS = "monday tuesday wednesday thursday friday saturday sunday".split()
# function words that open a sentence before a name ("The Polaris desk lamp", "In Lisbon …")
OPENERS = set(("a an the this that these those our their his her its my your we they it in on at from with by "
               "for of to as after before during when while here there some many most every each all one "
               "if but and or so then").split())

_PLACEHOLDER = re.compile(r"<image_\d+(?::\s*TARGET)?>")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_OPENING = re.compile(r"[\"“”«»:;()\[\]]")
_WORD = re.compile(r"[A-Za-z0-9][\w'’\-]*")
_CAPITALISED = re.compile(r"^[A-Z][\w'’\-]*$|^[A-Z0-9]*[A-Z][A-Z0-9]*$")
_DIGITS = re.compile(r"(?<![\w.])\d{1,3}(?:,\d{3})+(?:\.\d+)?|(?<![\w.])\d+(?:\.\d+)?")
_ISO_DATE = re.compile(r"\b\d{4}-\d{2}-\d{2}\b")
_YEAR = re.compile(r"\b(1[89]\d\d|20\d\d)\b")
_PAGE = re.compile(r"--- page ---\n(.*)\n--- end of page ---", re.S)
_ALT = re.compile(r'alt text is: "(.*)"\.')


@dataclass(frozen=True)
class Assertion:
    kind: str  # name | number | date
    text: str  # as written in the caption
    key: str  # normalised: what is looked up in the context


def context_of(prompt: str) -> str:
    """The page text and alt text of a caption prompt (core/chain/prompts.CAPTION), placeholders removed; the
    whole prompt when it has no page section (then the template's own words count as context too)."""
    page = _PAGE.search(prompt)
    alt = _ALT.search(prompt)
    text = "\n".join(x for x in ((alt.group(1) if alt else ""), (page.group(1) if page else prompt)) if x)
    return _PLACEHOLDER.sub(" ", text)


def _number_key(token: str) -> str | None:
    t = token.lower().replace(",", "")
    if t in NUMBER_WORDS:
        return str(NUMBER_WORDS[t])
    try:
        value = float(t)
    except ValueError:
        return None
    return str(int(value)) if value == int(value) else str(value)


def _names(sentence: str) -> list[str]:
    # a quotation or the words after a colon open like a sentence ("Review: the Polaris desk lamp")
    # a comma ends a run ("In Lisbon, Kenji Watanabe …") without opening a sentence
    return [n for part in _OPENING.split(_PLACEHOLDER.sub(" ", sentence))
            for k, clause in enumerate(part.split(",")) for n in _names_in(clause, at_start=k == 0)]


def _names_in(sentence: str, at_start: bool = True) -> list[str]:
    words = _WORD.findall(sentence)
    spans, run = [], []
    for pos, w in enumerate(words + [""]):
        if w and _CAPITALISED.match(w) and w.lower() not in NUMBER_WORDS:
            run.append((pos, w))
            continue
        if run:
            if at_start and run[0][0] == 0:  # opens the sentence: strip function words, a lone word says nothing
                while run and run[0][1].lower() in OPENERS:
                    run.pop(0)
                if len(run) < 2 and (not run or run[0][0] == 0):
                    run = []
            names = [x for _, x in run if x.lower() not in MONTHS + WEEKDAYS and x != "I"]
            if names:
                spans.append(" ".join(names))
            run = []
    return spans


def assertions(caption: str) -> list[Assertion]:
    """The names, numbers and dates `caption` asserts, in order, each once."""
    found: list[Assertion] = []
    for sentence in _SENTENCE.split(caption.strip()):
        found += [Assertion("name", n, n.lower()) for n in _names(sentence)]
        for w in _WORD.findall(sentence):
            if w.lower() in MONTHS or w.lower() in WEEKDAYS:
                found.append(Assertion("date", w, w.lower()))
            elif w.lower() in NUMBER_WORDS:
                found.append(Assertion("number", w, _number_key(w)))
        found += [Assertion("date", d, d) for d in _ISO_DATE.findall(sentence)]
        years = set(_YEAR.findall(sentence))
        found += [Assertion("date" if d in years else "number", d, _number_key(d) or d)
                  for d in _DIGITS.findall(_ISO_DATE.sub(" ", sentence))]
    seen, out = set(), []
    for a in found:
        if (a.kind, a.key) not in seen:
            seen.add((a.kind, a.key))
            out.append(a)
    return out


class Context:
    """What a caption may assert: the names, numbers and dates of one context, looked up by their keys."""

    def __init__(self, text: str):
        self.text = " " + " ".join(_WORD.findall(text.lower())) + " "
        self.numbers = {k for k in (_number_key(w) for w in _WORD.findall(text) + _DIGITS.findall(text)) if k}

    def supports(self, a: Assertion) -> bool:
        if a.kind == "number" or (a.kind == "date" and a.key.isdigit()):
            return a.key in self.numbers
        return f" {' '.join(_WORD.findall(a.key))} " in self.text


@dataclass(frozen=True)
class Faithfulness:
    asserted: int
    supported: int
    unsupported: tuple[str, ...]  # as written in the caption

    @property
    def hallucinates(self) -> bool:
        return self.supported < self.asserted


def faithfulness(caption: str, context: str | Context) -> Faithfulness:
    ctx = context if isinstance(context, Context) else Context(context)
    found = assertions(caption)
    bad = tuple(a.text for a in found if not ctx.supports(a))
    return Faithfulness(len(found), len(found) - len(bad), bad)
