"""The machine a benchmark figure comes from, printed beside it: figures on one machine differ by 2x with its load."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path


def describe(load_start: tuple[float, ...], load_end: tuple[float, ...] | None = None) -> str:
    """Cores, CPU model, memory, Python, the time, and the load average at the start (and end)."""
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")),
                 platform.processor() or "CPU model unknown")
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{os.cpu_count()} cores ({model}), {memory:.0f} GiB, Python {platform.python_version()}, "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average (1/5/15 min) "
            f"{'/'.join(f'{x:.1f}' for x in load_start)} at the start"
            + (f", {'/'.join(f'{x:.1f}' for x in load_end)} at the end" if load_end else ""))
