"""Where viscon's CPU per image goes: its fetcher under py-spy (every process), samples by kind of work.

    .venv/bin/pip install py-spy                       # a profiler, not a dependency of the project
    .venv/bin/python benchmarks/images/profile.py --n 600 [--cpu-pool default|thread|process] [--floor]

Serves the benchmark's JPEGs (`make_data.py`) on 8 loopback ports as `bench.py` does, runs `run_viscon.py` (or
`floor.py` with `--floor`) under `py-spy record --subprocesses` and sorts every sample by the innermost frame it
recognises: Pillow (decode, resize, encode), the perceptual hash, sha256, aiohttp, asyncio's loop, the guards
(SSRF, robots.txt), retries, moving bytes between processes (pickling, pipes), the journal (parquet), image
writes, imports and start-up, the rest. A sample is one thread on a CPU at one moment (idle threads are not
sampled), so shares of samples are shares of CPU; the ms per image put them on the CPU time measured for the
whole process tree. Prints a markdown table: per process role (main, worker), per kind.
"""

from __future__ import annotations

import argparse
import linecache
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench import DATA, TreeCPU, child_env, served  # noqa: E402

PY_SPY = Path(sys.executable).with_name("py-spy")

# (kind, test on "function (file:line)" of one frame, innermost frame first); first match wins
KINDS: list[tuple[str, re.Pattern]] = [
    ("imports, start-up", re.compile(r"<frozen importlib|_find_and_load|spawn\.py|forkserver\.py:\d+\)$")),
    ("sha256", re.compile(r"SRC:.*hashlib\.sha256")),
    ("Pillow: decode, resize, encode", re.compile(r"/PIL/|SRC:.*(\.load\(|\.resize\(|\.save\(|\.draft\()")),
    ("perceptual hash", re.compile(r"imagehash|scipy|numpy")),
    ("journal (parquet)", re.compile(r"journal\.py|/pyarrow/|core/files/parquet\.py")),
    ("image writes", re.compile(r"core/files/atomic\.py|upath|fsspec")),
    ("guards (SSRF, robots.txt)", re.compile(r"core/images/(safety|robots)\.py|ipaddress\.py|urllib/robotparser")),
    ("retries (tenacity)", re.compile(r"/tenacity/")),
    ("bytes between processes", re.compile(r"concurrent/futures/process\.py|multiprocessing/(connection|queues|"
                                           r"reduction)\.py|pickle|_send_bytes|_recv_bytes|send_bytes")),
    ("HTTP client (aiohttp)", re.compile(r"/aiohttp/|/multidict/|/yarl/")),
    ("asyncio event loop", re.compile(r"/asyncio/|selectors\.py")),
    ("viscon's own code", re.compile(r"viscon_dagster/|benchmarks/images/")),
]
# where a thread waits (py-spy's idle detection misses these blocking calls): not CPU, left out
IDLE = re.compile(r"selectors\.py:\d+\)$|futures/thread\.py:81\)$|threading\.py:\d+\)$|queue\.py:\d+\)$|"
                  r"^_recv \(.*connection\.py:\d+\)$|^_poll \(.*connection\.py|^Queue\.get .*queues\.py")
FRAME = re.compile(r"^(?P<fn>.*) \((?P<file>.*):(?P<line>\d+)\)$")


def kind_of(stack: list[str]) -> str:
    if not stack or IDLE.search(stack[-1]):
        return "idle"
    if any("<frozen importlib" in f for f in stack):
        return "imports, start-up"
    for frame in reversed(stack):  # innermost first
        m = FRAME.match(frame)
        text = frame
        if m and m["file"].startswith("/"):
            text += " SRC:" + linecache.getline(m["file"], int(m["line"])).strip()
        for kind, test in KINDS:
            if test.search(text):
                return kind
    return "other"


def read_raw(path: Path) -> tuple[dict[int, Counter], dict[int, str]]:
    """Samples per process and kind; each process's role (main or worker) from its command line."""
    by_proc: dict[int, Counter] = defaultdict(Counter)
    roles: dict[int, str] = {}
    for line in path.read_text().splitlines():
        stack_text, _, count = line.rpartition(" ")
        frames = stack_text.split(";")
        procs = [f for f in frames if f.startswith("process ")]
        pid = int(procs[-1].split(":", 1)[0].split()[1]) if procs else -1
        roles[pid] = "main" if len(procs) == 1 else "worker"
        by_proc[pid][kind_of([f for f in frames if not f.startswith(("process ", "thread "))])] += int(count)
    return by_proc, roles


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--cpu-pool", default="default")
    ap.add_argument("--floor", action="store_true", help="profile the floor instead")
    ap.add_argument("--rate", type=int, default=200, help="samples per second per thread")
    args = ap.parse_args()
    if not PY_SPY.exists():
        raise SystemExit(f"no {PY_SPY}: .venv/bin/pip install py-spy")
    files = sorted((DATA / "src").glob("*.jpg"))[: args.n]
    if len(files) < args.n:
        raise SystemExit(f"only {len(files)} JPEGs in {DATA / 'src'}; run make_data.py --n {args.n}")
    work = DATA / "profile"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    with served(files, work) as urls:
        if args.floor:
            target = [str(HERE / "floor.py"), "--src", str(DATA / "src"), "--out", str(work / "out"), "--n",
                      str(args.n)]
        else:
            target = [str(HERE / "run_viscon.py"), "--urls", str(urls), "--out", str(work / "out"),
                      "--cpu-pool", args.cpu_pool]
        raw = work / "samples.raw"
        load_before = os.getloadavg()
        started = time.perf_counter()
        proc = subprocess.Popen([str(PY_SPY), "record", "-s", "-r", str(args.rate), "-f", "raw", "--full-filenames",
                                 "-o", str(raw), "--", sys.executable, *target], env=child_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        tree = TreeCPU(proc.pid)
        proc.wait()
        wall = time.perf_counter() - started
        tree.stop()  # CPU per process in tree.seen (py-spy's own is left out below)
        load_after = os.getloadavg()
    by_proc, roles = read_raw(raw)
    cpu_of = {pid: c for (pid, _), c in tree.seen.items()}  # CPU s of each process, measured
    spy_cpu = cpu_of.pop(proc.pid, 0.0)  # py-spy's own
    # each process's measured CPU spread over its busy samples: ms per image per kind
    per_role: dict[str, Counter] = defaultdict(Counter)
    for pid, counts in by_proc.items():
        busy = sum(n for k, n in counts.items() if k != "idle")
        ms = cpu_of.get(pid, 0.0) * 1000 / args.n
        for k, n in counts.items():
            if k != "idle" and busy:
                per_role[roles[pid]][k] += ms * n / busy
    cpu_profiled = sum(cpu_of.values())
    kinds = [k for k, _ in KINDS] + ["other"]
    print(f"{'floor' if args.floor else 'viscon (' + args.cpu_pool + ')'}: {args.n} images, {os.cpu_count()} cores, "
          f"load {load_before[0]:.2f} -> {load_after[0]:.2f}, wall {wall:.1f} s (under the profiler), "
          f"CPU {cpu_profiled / args.n * 1000:.1f} ms per image (py-spy's own {spy_cpu:.1f} s left out)")
    roles_seen = sorted(per_role)
    total = sum(sum(c.values()) for c in per_role.values())
    print("\n| kind | " + " | ".join(f"{r} ms/image" for r in roles_seen) + " | all ms/image | share |")
    print("|---|" + "---:|" * (len(roles_seen) + 2))
    for k in kinds:
        v = sum(per_role[r][k] for r in roles_seen)
        if v < 0.005:
            continue
        cells = " | ".join(f"{per_role[r][k]:.2f}" for r in roles_seen)
        print(f"| {k} | {cells} | {v:.2f} | {v / total:.0%} |")
    cells = " | ".join(f"{sum(per_role[r].values()):.2f}" for r in roles_seen)
    print(f"| **all** | {cells} | {total:.2f} | 100% |")

if __name__ == "__main__":
    main()
