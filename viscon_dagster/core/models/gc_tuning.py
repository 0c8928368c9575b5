"""Keep CPython's cyclic garbage collector out of the way of a high-rate request loop.

A Dagster step process holds a few hundred thousand long-lived objects (dagster, pydantic, openai,
pandas, the partition's requests). Each HTTP call allocates hundreds of short-lived ones, so the
default thresholds (700, 10, 10) run a young collection every few requests and a full one, which walks
every live object and stops the event loop for ~0.1 s, every ~100 young ones. On the benchmark (256 in
flight, 200 ms server latency) that costs a third of the client's CPU and, worse, the pauses bunch
answers into bursts the single event loop then works through late (0.55–0.61 → 0.86–0.91 of ideal
over whole calls; docs/benchmarks.md). Reference counting still frees almost everything at once; only cycles wait
for the rarer collections.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def gc_tuned_for_throughput(young_threshold: int = 50_000) -> Iterator[None]:
    """Within the block: objects alive at entry are frozen (left out of every collection) and young
    collections run every `young_threshold` allocations. Both are undone on exit. Process-wide, like
    every GC setting; nested or concurrent uses keep the outermost settings until the last one exits."""
    global _depth
    with _lock:
        if _depth == 0:
            # someone else's freeze (e.g. a pre-forking server) is left alone: unfreeze would undo it
            owns_freeze = gc.get_freeze_count() == 0
            _saved.append((gc.get_threshold(), owns_freeze))
            if owns_freeze:
                gc.freeze()
            first, *rest = gc.get_threshold()
            gc.set_threshold(max(first, young_threshold), *rest)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                threshold, owns_freeze = _saved.pop()
                gc.set_threshold(*threshold)
                if owns_freeze:
                    gc.unfreeze()


_lock = threading.Lock()
_depth = 0
_saved: list[tuple[tuple[int, ...], bool]] = []
