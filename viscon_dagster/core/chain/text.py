"""Cleaning the text a model wrote before it becomes a row (captions, Q&A), so every later artifact is clean.

Models emit stray control characters (NUL, escape sequences) and broken UTF-8 (a multi-byte character cut at the
token limit, byte-level tokens decoded out of order); text they copy from the web brings mojibake (`cafÃ©`). In
each text vertical tab and form feed become newlines, `ftfy` fixes mojibake, C1 controls, surrogates, terminal
escapes and line breaks (NFC), then every control character but newline and tab is removed. What `ftfy` cannot
restore shows as U+FFFD (bytes lost before the text reached us): the mark is removed, so no reader meets it, and
the text is counted *unrepairable*; text changed without loss is counted *repaired*. The journals keep what the
model said, unchanged.

Quotes, ligatures and full-width forms are left as the model wrote them: they are text, not damage.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import ftfy

FIXER = ftfy.TextFixerConfig(unescape_html=False, uncurl_quotes=False, fix_latin_ligatures=False,
                             fix_character_width=False, explain=False)
REPLACEMENT = "\ufffd"
# vertical tab and form feed separate lines: they become newlines rather than glue two words together
LINE_SEPARATORS = str.maketrans({"\x0b": "\n", "\x0c": "\n"})
# control characters (Unicode Cc: C0, DEL, C1) other than tab and newline
CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# what the checks refuse in cleaned text: any of those controls, or a replacement character
UNCLEAN_REGEX = r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ufffd]"
UNCLEAN = re.compile(UNCLEAN_REGEX)

REPAIRED, UNREPAIRABLE = "repaired", "unrepairable"
TEXT_FIXES = (REPAIRED, UNREPAIRABLE)


@dataclass(frozen=True)
class CleanText:
    text: str
    fix: str | None  # None: unchanged; "repaired"; "unrepairable" (characters were lost before it reached us)


def clean_model_text(text: str) -> CleanText:
    """`text` fixed by ftfy, with controls (but newline and tab) and U+FFFD removed; what was done to it."""
    fixed = ftfy.fix_text(text.translate(LINE_SEPARATORS), FIXER) if text else text
    lost = REPLACEMENT in fixed
    cleaned = CONTROLS.sub("", fixed.replace(REPLACEMENT, ""))
    return CleanText(cleaned, UNREPAIRABLE if lost else REPAIRED if cleaned != text else None)


def is_unclean(text: str | None) -> bool:
    return bool(text) and UNCLEAN.search(text) is not None


def worst_fix(fixes: Iterable[str | None]) -> str | None:
    """One row's fix from those of its texts: unrepairable over repaired over none."""
    found = set(fixes)
    return UNREPAIRABLE if UNREPAIRABLE in found else REPAIRED if REPAIRED in found else None


class TextCleaner:
    """Cleans the texts of one row and remembers the worst fix among them (`fix`)."""

    def __init__(self) -> None:
        self._fixes: list[str | None] = []

    def __call__(self, value: object) -> str:
        """The cleaned, stripped text; '' for anything that is not a string."""
        if not isinstance(value, str):
            return ""
        cleaned = clean_model_text(value)
        self._fixes.append(cleaned.fix)
        return cleaned.text.strip()

    @property
    def fix(self) -> str | None:
        return worst_fix(self._fixes)
