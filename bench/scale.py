"""How do kiln's costs grow with the data? The demo corpus at N images through the real chain.

    python bench/scale.py --sizes 10000 100000 [--image-size 32] [--work /tmp/kiln-scale]

For each N: the demo corpus (pots, distractors and junk in the default proportions, ground
truth inside the files) is rendered into a folder tree, so the crawl is the folder source (a
browser would dominate and measure Chromium, not kiln). A temporary git + DVC repo runs the
real dvc.yaml on it with `families: [classifier]`, one training epoch, no hpo: each stage
alone (`dvc repro --single-item`), timed, with the peak RSS of its largest process and the
size of what it wrote. Then `dvc status` and a no-op `dvc repro`, the median of three.
Between two sizes it prints each figure's growth against linear (1.0 = grows like N).

Wall times depend on what else runs on the machine (the load average is printed); CPU-bound
stages are best compared as ratios within one run.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stages.demo.corpus import plan_items, render_item  # noqa: E402

STAGES = ["params", "crawl", "filter", "split", "augment", "hpo@classifier", "train@classifier"]
OUTPUTS = {"crawl": ["data/raw"], "filter": ["data/filtered", "models/filter"], "split": ["data/split"],
           "augment": ["data/augmented"], "train@classifier": ["models/classifier"]}
# What a peak-RSS wrapper prints last on stderr: the largest descendant's max RSS in kB.
RSS_WRAPPER = ("import resource, subprocess, sys\n"
               "code = subprocess.run(sys.argv[1:]).returncode\n"
               "print('maxrss_kb', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
               "sys.exit(code)\n")


def render_folder(folder: Path, n_images: int, size: int, workers: int) -> None:
    """N images in the default corpus's proportions (1000 pots : 100 distractors : 60 junk per
    class) under folder/train/<class>/, written as they are rendered (never all in memory)."""
    per_class = n_images / 2 / 1.16
    items = plan_items(["bowl", "vase"], 42, size, round(per_class), round(per_class / 10), round(per_class * 0.06))
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        for rendered in pool.imap(render_item, items, chunksize=64):
            target = folder / "train" / rendered.item.cls / rendered.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(rendered.data)


def scale_params(folder: Path, image_size: int) -> dict:
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    data["base"]["image_size"] = image_size
    data["crawl"].update(engine="folder", folder=str(folder))
    data["families"] = ["classifier"]
    data["hpo"] = {}
    data["split"]["store_size"] = 2 * image_size
    data["train"]["classifier"].update(epochs=1)
    return data


def make_repo(root: Path, params: dict) -> None:
    shutil.copytree(REPO / "stages", root / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "labels", root / "labels")
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (root / ".gitignore").write_text("/.kiln/\n__pycache__/\n")
    dvc = [sys.executable, "-m", "dvc"]
    for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "bench@kiln"],
                ["git", "config", "user.name", "bench"], [*dvc, "init", "-q"],
                [*dvc, "config", "core.analytics", "false"], ["git", "add", "-A"], ["git", "commit", "-qm", "scale"]):
        subprocess.run(cmd, cwd=root, check=True, capture_output=True)


def timed(cmd: list[str], cwd: Path) -> tuple[float, int]:
    """(wall seconds, peak RSS in MB of the largest process under cmd); fails loudly."""
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-c", RSS_WRAPPER, *cmd], cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if run.returncode != 0:
        raise SystemExit(f"bench/scale.py: {' '.join(cmd)} failed in {cwd}:\n{run.stderr[-3000:]}")
    rss_kb = int(run.stderr.strip().splitlines()[-1].split()[1])
    return wall, rss_kb // 1024


def disk_mb(root: Path, paths: list[str]) -> tuple[float, int]:
    """MB of the outputs' files as DVC sees them (links into the cache counted once), and how
    many files DVC must check on every status (what a no-op repro's time follows)."""
    seen, total = set(), 0
    for rel in paths:
        for path in (root / rel).rglob("*") if (root / rel).is_dir() else [root / rel]:
            if path.is_file():
                stat = path.stat()
                if (stat.st_dev, stat.st_ino) not in seen:
                    seen.add((stat.st_dev, stat.st_ino))
                    total += stat.st_size
    return total / 1e6, len(seen)


def median_seconds(cmd: list[str], cwd: Path, runs: int = 3) -> float:
    return statistics.median(timed(cmd, cwd)[0] for _ in range(runs))


def measure(n_images: int, work: Path, image_size: int) -> dict:
    folder, root = work / f"photos-{n_images}", work / f"repo-{n_images}"
    for old in (folder, root):
        shutil.rmtree(old, ignore_errors=True)
    start = time.perf_counter()
    render_folder(folder, n_images, image_size, os.cpu_count() or 1)
    figures = {"n": n_images, "render_s": time.perf_counter() - start, "stages": {}}
    make_repo(root, scale_params(folder, image_size))
    for stage in STAGES:
        wall, rss = timed([sys.executable, "-m", "dvc", "repro", "--single-item", stage], root)
        out_mb, out_files = disk_mb(root, OUTPUTS.get(stage, []))
        figures["stages"][stage] = {"wall_s": wall, "peak_rss_mb": rss, "out_mb": out_mb, "out_files": out_files}
        print(f"  N={n_images} {stage}: {wall:.1f}s, peak RSS {rss} MB", flush=True)
    figures["dvc_status_s"] = median_seconds([sys.executable, "-m", "dvc", "status"], root)
    figures["noop_repro_s"] = median_seconds([sys.executable, "-m", "dvc", "repro"], root)
    return figures


def table(results: list[dict]) -> str:
    head = "| stage | " + " | ".join(f"N={r['n']:,}: s / peak MB / out MB / files" for r in results)
    growth = len(results) >= 2
    if growth:
        head += f" | growth {results[0]['n']:,} -> {results[-1]['n']:,}: time, RSS (vs x{results[-1]['n'] / results[0]['n']:.0f})"
    lines = [head + " |", "|" + "---|" * (head.count("|"))]
    for stage in STAGES:
        cells = [f"{r['stages'][stage]['wall_s']:.1f} / {r['stages'][stage]['peak_rss_mb']} / "
                 f"{r['stages'][stage]['out_mb']:.1f} / {r['stages'][stage].get('out_files', 0)}" for r in results]
        if growth:
            first, last = results[0]["stages"][stage], results[-1]["stages"][stage]
            cells.append(f"x{last['wall_s'] / first['wall_s']:.1f}, x{last['peak_rss_mb'] / first['peak_rss_mb']:.1f}")
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    for key, name in (("dvc_status_s", "`dvc status`"), ("noop_repro_s", "no-op `dvc repro`")):
        cells = [f"{r[key]:.2f} s" for r in results]
        if growth:
            cells.append(f"x{results[-1][key] / results[0][key]:.1f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--work", type=Path, default=Path("/tmp/kiln-scale"))
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    # the stages' `python -m stages...` commands run this interpreter (its venv) however it was started
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    results = []
    for n_images in args.sizes:
        print(f"N={n_images}: load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
        results.append(measure(n_images, args.work, args.image_size))
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
