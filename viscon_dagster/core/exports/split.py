"""Train/test split by a seeded hash of the page URL: every sample of a page lands in the same split,
and the assignment never changes with reruns, row order or the other pages in the run (`split_for`).

A release also needs every config to hold both splits: `datasets` cannot load a split without rows (one empty
split makes the whole config unloadable: "Instruction 'test' corresponds to no data"), and a small release — a
few pages, a mix on a few of them — easily draws no test page for some config. `plan_splits` keeps the hash split
and, only for a config that lacks a split, moves whole pages across: the page of that config whose hash lies
nearest the threshold, for every config at once (a page is never in both splits), and only where each config on
that page keeps a record in the split it leaves. A config on a single page cannot have both; it keeps its one.
At scale no config lacks a split and nothing moves; the plan says which pages moved.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

SPLITS = ("train", "test")
DEFAULT_TEST_FRACTION = 0.05


def split_score(doc_url: str, seed: int = 0) -> float:
    """The page's place in [0, 1): below the test fraction is test."""
    h = hashlib.sha256(f"{seed}:{doc_url}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def split_for(doc_url: str, test_fraction: float = DEFAULT_TEST_FRACTION, seed: int = 0) -> str:
    if not 0.0 <= test_fraction <= 1.0:
        raise ValueError(f"test_fraction must be in [0, 1], got {test_fraction}")
    return "test" if split_score(doc_url, seed) < test_fraction else "train"


@dataclass
class SplitPlan:
    test_fraction: float = DEFAULT_TEST_FRACTION
    seed: int = 0
    moved: dict[str, str] = field(default_factory=dict)  # page url → the split it was moved to

    def split(self, doc_url: str) -> str:
        return self.moved.get(doc_url) or split_for(doc_url, self.test_fraction, self.seed)

    def metadata(self) -> dict[str, int]:
        moved = Counter(self.moved.values())
        return {f"pages_moved_to_{s}": moved.get(s, 0) for s in SPLITS}


# (page url, config) of every record, one list per table (a page's records all lie in one table)
PageConfigs = Callable[[], Iterable[list[tuple[str, str]]]]


def plan_splits(records: PageConfigs, test_fraction: float = DEFAULT_TEST_FRACTION, seed: int = 0) -> SplitPlan:
    """The split of every page such that each config holds both splits where it can (module doc). `records()` is
    read once, and a second time only when some config lacks a split."""
    plan = SplitPlan(test_fraction, seed)
    rows: Counter = Counter()  # (config, split) → records
    for table in records():
        for url, config in table:
            rows[(config, plan.split(url))] += 1
    configs = {c for c, _ in rows}
    short = {c for c in configs if not all(rows[(c, s)] for s in SPLITS)}
    if not short or test_fraction in (0.0, 1.0):  # nothing lacks a split, or one split was asked for
        return plan
    pages: dict[str, Counter] = {}  # page → config → records, for the pages holding a config that lacks a split
    for table in records():
        per_page: dict[str, Counter] = {}
        for url, config in table:
            per_page.setdefault(url, Counter())[config] += 1
        pages.update((url, held) for url, held in per_page.items() if short & set(held))
    for config in sorted(short):
        for missing in SPLITS:
            if rows[(config, missing)]:
                continue
            source = next(s for s in SPLITS if s != missing)
            candidates = [u for u, held in pages.items() if held[config] and plan.split(u) == source]
            # nearest the threshold first: the lowest scores of train pages, the highest of test pages
            candidates.sort(key=lambda u: (split_score(u, seed) if missing == "test" else -split_score(u, seed), u))
            for url in candidates:
                held = pages[url]
                if all(rows[(c, source)] > n for c, n in held.items()):  # every config keeps a record in `source`
                    plan.moved[url] = missing
                    for c, n in held.items():
                        rows[(c, source)] -= n
                        rows[(c, missing)] += n
                    break
    return plan
