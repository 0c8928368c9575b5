"""Image acquisition benchmark: viscon's fetcher vs img2dataset vs the CPU floor, in one run.

    .venv/bin/python benchmarks/images/make_data.py --n 2000          # once: JPEGs to serve
    python3 -m venv .venv-img2dataset && .venv-img2dataset/bin/pip install img2dataset
    .venv/bin/python benchmarks/images/bench.py --n 2000 --rounds 2

Each round runs the three, in an order that rotates from round to round, so drift in machine load
hits all of them; the files are read once before the first round, so every contender reads them from the page cache:

- **floor** (`floor.py`): the same files read from disk and decoded, resized, re-encoded and hashed
  (sha256 + phash) with the same settings by a plain process pool, one worker per core: the CPU
  cost of the work itself, with no network, no checks, no journal.
- **img2dataset** and **viscon** fetch the same URL list from one static server (8 ports on
  127.0.0.1, sendfile, its own process, not counted) with equivalent work: long edge <= 1024 px (never
  upscaled), area-averaging downscale, JPEG quality 90, min side 150, max aspect ratio 3, sha256 of
  the original bytes, X-Robots-Tag checked. viscon also runs its SSRF guard, robots.txt, per-host
  bounds, perceptual hash, de-duplication and the resume journal (all defaults).

Measured: wall time of each child process; CPU = user + system of the child and all its descendants
(sampled from /proc while they run, so pool workers that another process reaps are counted too);
cores busy = CPU / wall; the 1-minute load average before and after. Rates are reported as a ratio
to the floor of the same round. Results go to stdout as a markdown table and to
benchmarks/.data/images/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DATA = REPO / "benchmarks" / ".data" / "images"
IMG2DATASET = REPO / ".venv-img2dataset" / "bin" / "img2dataset"

sys.path.insert(0, str(REPO))
from benchmarks.machine import describe  # noqa: E402


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(NO_ALBUMENTATIONS_UPDATE="1", no_proxy="127.0.0.1,localhost", WANDB_MODE="disabled",
               HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    return env


class TreeCPU:
    """CPU seconds of a process and every descendant, sampled while they run (last value per pid)."""

    def __init__(self, pid: int, every_s: float = 0.1):
        self.root, self.every_s = psutil.Process(pid), every_s
        self.seen: dict[tuple[int, float], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                procs = []
            for p in procs:
                try:
                    with p.oneshot():
                        t = p.cpu_times()
                        self.seen[(p.pid, p.create_time())] = t.user + t.system
                except psutil.Error:
                    pass
            self._stop.wait(self.every_s)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return sum(self.seen.values())


def timed(cmd: list[str], log: Path) -> dict:
    """Wall s, CPU s of the child tree, cores busy, load before/after, stdout."""
    load_before = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    with log.open("w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=child_env(), cwd=REPO)
        tree = TreeCPU(proc.pid)
        stdout, _ = proc.communicate()
    wall = time.perf_counter() - started
    sampled = tree.stop()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise SystemExit(f"{cmd[0]} failed ({proc.returncode}); see {log}")
    reaped = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    # reaped: exact for every descendant waited for; sampled: also those reaped elsewhere (a forkserver's)
    cpu = max(reaped, sampled)
    return {"wall_s": wall, "cpu_s": cpu, "cores_busy": cpu / wall, "load_before": load_before,
            "load_after": os.getloadavg()[0], "stdout": stdout}


def run_floor(n: int, phash: bool) -> dict:
    out = DATA / "out-floor"
    shutil.rmtree(out, ignore_errors=True)
    r = timed([sys.executable, str(HERE / "floor.py"), "--src", str(DATA / "src"), "--out", str(out),
               "--n", str(n), *([] if phash else ["--no-phash"])], DATA / "floor.log")
    r.update(name="floor: process pool, from disk" + ("" if phash else ", no phash"), kind="floor",
             images=json.loads(r.pop("stdout").strip().splitlines()[-1])["images"])
    return r


def run_viscon(urls: Path, pool: str, workers: int | None) -> dict:
    out = DATA / "out-viscon"
    shutil.rmtree(out, ignore_errors=True)
    r = timed([sys.executable, str(HERE / "run_viscon.py"), "--urls", str(urls), "--out", str(out),
               "--cpu-pool", pool, *(["--cpu-workers", str(workers)] if workers else [])],
              DATA / f"viscon-{pool}.log")
    stats = json.loads(r.pop("stdout").strip().splitlines()[-1])
    label = "default settings" if pool == "default" else f"{pool} pool"
    r.update(name=f"viscon ({label}" + (f" x{workers}" if workers else "") + ")", kind="viscon",
             images=stats["with_image"], detail=stats["status_counts"])
    return r


def run_img2dataset(urls: Path, threads: int) -> dict:
    out = DATA / "out-img2dataset"
    shutil.rmtree(out, ignore_errors=True)
    r = timed([
        str(IMG2DATASET), f"--url_list={urls}", "--input_format=txt", f"--output_folder={out}",
        "--output_format=files", f"--processes_count={os.cpu_count() or 2}", f"--thread_count={threads}",
        "--number_sample_per_shard=250", "--image_size=1024", "--resize_mode=keep_ratio_largest",
        "--resize_only_if_bigger=True", "--encode_format=jpg", "--encode_quality=90", "--min_image_size=150",
        "--max_aspect_ratio=3", "--timeout=20", "--retries=0", "--compute_hash=sha256", "--enable_wandb=False",
        "--distributor=multiprocessing",
    ], DATA / "img2dataset.log")
    r.pop("stdout")
    version = subprocess.run([str(IMG2DATASET.parent / "python"), "-c",
                              "import importlib.metadata as m; print(m.version('img2dataset'))"],
                             capture_output=True, text=True).stdout.strip()
    r.update(name=f"img2dataset {version} ({os.cpu_count() or 2} processes x {threads} threads)",
             kind="img2dataset", images=sum(json.loads(p.read_text())["successes"] for p in out.glob("*_stats.json")))
    return r


@contextmanager
def served(files: list[Path], work: Path) -> Iterator[Path]:
    """The loopback image server over DATA/src (serve.py: 8 ports, its own process, not counted); yields a file
    listing the URLs of `files`, spread over the ports."""
    port_file = work / "ports.txt"
    port_file.unlink(missing_ok=True)
    server = subprocess.Popen([sys.executable, str(HERE / "serve.py"), "--root", str(DATA / "src"), "--ports", "8",
                               "--port-file", str(port_file)], env=child_env())
    try:
        for _ in range(100):
            if port_file.exists() and port_file.read_text().strip():
                break
            time.sleep(0.1)
        ports = port_file.read_text().split()
        urls = work / "urls.txt"
        urls.write_text("\n".join(f"http://127.0.0.1:{ports[i % len(ports)]}/img/{f.name}"
                                  for i, f in enumerate(files)) + "\n")
        yield urls
    finally:
        server.terminate()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--img2dataset-threads", type=int, default=256)  # its default
    parser.add_argument("--viscon", default="default",
                        help="comma-separated viscon variants: default, thread, process, thread:4, ...")
    parser.add_argument("--floor-no-phash", action="store_true", help="also run the floor without phash")
    args = parser.parse_args()
    files = sorted((DATA / "src").glob("*.jpg"))[: args.n]
    if len(files) < args.n:
        raise SystemExit(f"only {len(files)} JPEGs in {DATA / 'src'}; run make_data.py --n {args.n}")
    # every contender then reads the files from the page cache: otherwise whoever runs first (the floor, in round 1)
    # pays the disk reads and the later ones do not
    for f in files:
        f.read_bytes()
    results: list[dict] = []
    started_load = os.getloadavg()
    print(f"start: {describe(started_load, None)}", file=sys.stderr)
    with served(files, DATA) as urls:
        contenders = [lambda: run_floor(args.n, phash=True)]
        if args.floor_no_phash:
            contenders.append(lambda: run_floor(args.n, phash=False))
        if IMG2DATASET.exists():
            contenders.append(lambda: run_img2dataset(urls, args.img2dataset_threads))
        else:
            print(f"(no {IMG2DATASET}: img2dataset skipped)", file=sys.stderr)
        for variant in args.viscon.split(","):
            pool, _, workers = variant.partition(":")
            n_workers = int(workers) if workers else None
            contenders.append(lambda pool=pool, n_workers=n_workers: run_viscon(urls, pool, n_workers))
        for round_no in range(1, args.rounds + 1):
            shift = (round_no - 1) % len(contenders)  # rotate the order
            for run in contenders[shift:] + contenders[:shift]:
                r = run()
                r["round"] = round_no
                results.append(r)
                print(f"round {round_no}: {r['name']}: {r['cpu_s'] / max(1, r['images']) * 1000:.1f} CPU ms/image, "
                      f"{r['images'] / r['wall_s']:.1f} images/s, {r['cores_busy']:.2f} cores, "
                      f"load {r['load_before']:.1f}->{r['load_after']:.1f}", file=sys.stderr)
                (DATA / "results-partial.json").write_text(json.dumps(results, indent=1))
    sizes = [f.stat().st_size for f in files]
    data = (f"{args.n} JPEGs ({min(sizes) // 1024} KB - {max(sizes) // 1024} KB, median "
            f"{sorted(sizes)[len(sizes) // 2] // 1024} KB, {sum(sizes) / 2**30:.2f} GiB)")
    header = f"{data}; {describe(started_load, os.getloadavg())}"
    lines = [header, "", "| round | contender | CPU ms / image | CPU of floor | images/s | of floor | cores busy "
             "| images ok | wall s | load 1 min |", "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        r["images_per_s"] = r["images"] / r["wall_s"]
        r["cpu_ms_per_image"] = r["cpu_s"] / max(1, r["images"]) * 1000
    for r in results:
        floor = next(x for x in results if x["round"] == r["round"] and x["kind"] == "floor")
        r["of_floor"] = r["images_per_s"] / floor["images_per_s"]
        r["cpu_of_floor"] = r["cpu_ms_per_image"] / floor["cpu_ms_per_image"]
        lines.append(f"| {r['round']} | {r['name']} | {r['cpu_ms_per_image']:.1f} | {r['cpu_of_floor']:.2f}x | "
                     f"{r['images_per_s']:.1f} | {r['of_floor']:.2f} | {r['cores_busy']:.2f} | {r['images']} | "
                     f"{r['wall_s']:.1f} | {r['load_before']:.1f} → {r['load_after']:.1f} |")
    lines.append("")
    for round_no in range(1, args.rounds + 1):
        rs = [r for r in results if r["round"] == round_no]
        base = next((r for r in rs if r["kind"] == "img2dataset"), None)
        for r in rs:
            if r["kind"] == "viscon":
                vs = f", {r['images_per_s'] / base['images_per_s']:.2f}x img2dataset's images/s" if base else ""
                lines.append(f"round {round_no}: {r['name']}: CPU per image {r['cpu_of_floor']:.2f}x the floor's, "
                             f"{r['of_floor']:.2f} of the floor's images/s{vs}")
    print("\n".join(lines))
    (DATA / "results.json").write_text(json.dumps({"header": header, "results": results}, indent=1))


if __name__ == "__main__":
    main()
