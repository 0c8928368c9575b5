"""Image acquisition benchmark: viscon's fetcher vs img2dataset on the same loopback URL list.

    .venv/bin/python benchmarks/images/make_data.py --n 5000          # once: JPEGs to serve
    python3 -m venv .venv-img2dataset && .venv-img2dataset/bin/pip install img2dataset
    .venv/bin/python benchmarks/images/bench.py --n 5000 [--rounds 1]

Both contenders run as child processes, one after the other, against the same static server
(8 ports on 127.0.0.1, sendfile), with equivalent work: resize so the long edge is at most
1024 px (never upscale), re-encode JPEG quality 90, min side 150, max aspect ratio 3, sha256 of
the original bytes, X-Robots-Tag checked. viscon additionally runs its SSRF guard, robots.txt,
per-host bounds, perceptual hash, de-duplication and the resume journal (all defaults). Wall time
and CPU seconds (user + system of the child and its descendants) are measured here. Results go to
stdout as a markdown table and to benchmarks/.data/images/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DATA = REPO / "benchmarks" / ".data" / "images"
IMG2DATASET = REPO / ".venv-img2dataset" / "bin" / "img2dataset"


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(NO_ALBUMENTATIONS_UPDATE="1", no_proxy="127.0.0.1,localhost", WANDB_MODE="disabled",
               HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    return env


def timed(cmd: list[str], log: Path) -> tuple[float, float, str]:
    """(wall s, CPU s of the child tree, stdout)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    with log.open("w") as err:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=child_env(), cwd=REPO)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise SystemExit(f"{cmd[0]} failed ({proc.returncode}); see {log}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc.stdout


def run_viscon(urls: Path, out: Path, cpu_pool: str) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    wall, cpu, stdout = timed([sys.executable, str(HERE / "run_viscon.py"), "--urls", str(urls), "--out", str(out),
                               "--cpu-pool", cpu_pool], DATA / f"viscon-{cpu_pool}.log")
    stats = json.loads(stdout.strip().splitlines()[-1])
    return {"name": f"viscon ({cpu_pool} pool)", "wall_s": wall, "cpu_s": cpu, "images": stats["with_image"],
            "detail": stats["status_counts"]}


def run_img2dataset(urls: Path, out: Path, threads: int) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    wall, cpu, _ = timed([
        str(IMG2DATASET), f"--url_list={urls}", "--input_format=txt", f"--output_folder={out}",
        "--output_format=files", f"--processes_count={os.cpu_count() or 2}", f"--thread_count={threads}",
        "--number_sample_per_shard=250", "--image_size=1024", "--resize_mode=keep_ratio_largest",
        "--resize_only_if_bigger=True", "--encode_format=jpg", "--encode_quality=90", "--min_image_size=150",
        "--max_aspect_ratio=3", "--timeout=20", "--retries=0", "--compute_hash=sha256", "--enable_wandb=False",
        "--distributor=multiprocessing",
    ], DATA / "img2dataset.log")
    ok = sum(json.loads(p.read_text())["successes"] for p in out.glob("*_stats.json"))
    version = subprocess.run([str(IMG2DATASET.parent / "python"), "-c",
                              "import importlib.metadata as m; print(m.version('img2dataset'))"],
                             capture_output=True, text=True).stdout.strip()
    return {"name": f"img2dataset {version} ({threads} threads/process)", "wall_s": wall, "cpu_s": cpu, "images": ok,
            "detail": {}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--img2dataset-threads", type=int, default=256)  # its default
    args = parser.parse_args()
    files = sorted((DATA / "src").glob("*.jpg"))[: args.n]
    if len(files) < args.n:
        raise SystemExit(f"only {len(files)} JPEGs in {DATA / 'src'}; run make_data.py --n {args.n}")
    port_file = DATA / "ports.txt"
    port_file.unlink(missing_ok=True)
    server = subprocess.Popen([sys.executable, str(HERE / "serve.py"), "--root", str(DATA / "src"), "--ports", "8",
                               "--port-file", str(port_file)], env=child_env())
    try:
        for _ in range(100):
            if port_file.exists() and port_file.read_text().strip():
                break
            time.sleep(0.1)
        ports = port_file.read_text().split()
        urls = DATA / "urls.txt"
        urls.write_text("\n".join(f"http://127.0.0.1:{ports[i % len(ports)]}/img/{f.name}"
                                  for i, f in enumerate(files)) + "\n")
        results = []
        for _ in range(args.rounds):  # alternate, so drift in machine load hits both
            if IMG2DATASET.exists():
                results.append(run_img2dataset(urls, DATA / "out-img2dataset", args.img2dataset_threads))
            # (thread pool only: a process pool's workers descend from a forkserver whose CPU time
            # this parent cannot collect)
            results.append(run_viscon(urls, DATA / "out-viscon", "thread"))
    finally:
        server.terminate()
        server.wait()
    sizes = [f.stat().st_size for f in files]
    header = (f"{args.n} JPEGs ({min(sizes) // 1024} KB - {max(sizes) // 1024} KB, median "
              f"{sorted(sizes)[len(sizes) // 2] // 1024} KB, {sum(sizes) / 2**30:.2f} GiB) on "
              f"{os.cpu_count()} cores, {platform.python_version()}")
    lines = [header, "", "| contender | images ok | wall s | images/s | CPU s | CPU s / image |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['name']} | {r['images']} | {r['wall_s']:.1f} | {r['images'] / r['wall_s']:.1f} | "
                     f"{r['cpu_s']:.1f} | {r['cpu_s'] / max(1, r['images']) * 1000:.1f} ms |")
    print("\n".join(lines))
    (DATA / "results.json").write_text(json.dumps({"header": header, "results": results}, indent=1))


if __name__ == "__main__":
    main()
