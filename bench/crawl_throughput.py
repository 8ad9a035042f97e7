"""Crawl throughput on loopback: images kept per second, browser start included.

    python bench/crawl_throughput.py [--demo DIR] [--per-class 1000] [--runs 1]

Serves --demo DIR (a corpus ``python -m stages.demo --out DIR`` wrote) when given, else
builds a corpus of the demo's size and format in a temp dir (per class: pots as 64 px PNGs
with a kiln.fields chunk, 10% distractor JPEGs, 6% junk). Runs ``python -m stages.crawl`` as a subprocess with the
crawl section of params.yaml, twice: as configured (the local site misbehaving) and
with every misbehaviour off. The clock covers the whole process: Python start,
Chromium start, searches, downloads, checks and writing data/raw.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, PngImagePlugin

REPO = Path(__file__).resolve().parents[1]
QUIET = {"slow_fraction": 0.0, "error_fraction": 0.0, "flaky_fraction": 0.0,
         "redirect_fraction": 0.0, "wrong_type_fraction": 0.0}


def _image(rng: np.random.Generator, size: int) -> Image.Image:
    """A smooth random blob plus noise: compresses like a rendered pot, not like a flat fill."""
    y, x = np.mgrid[0:size, 0:size] / size
    base = rng.uniform(0, 255, 3) * (1 - (x - 0.5) ** 2 - (y - 0.5) ** 2)[..., None]
    noise = rng.normal(0, 6, (size, size, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def build_corpus(root: Path, classes: list[str], per_class: int, size: int = 64) -> int:
    rng, rows = np.random.default_rng(0), []
    (root / "files").mkdir(parents=True)
    for cls in classes:
        for i in range(per_class + per_class // 10 + per_class * 6 // 100):
            kind = "pot" if i < per_class else "distractor" if i < per_class * 11 // 10 else "junk"
            item_id, out = f"{cls}-{i:05d}", io.BytesIO()
            image = _image(rng, size if kind != "junk" or i % 2 else 12)   # half the junk is tiny
            if kind == "distractor":
                image.save(out, format="JPEG", quality=90)
                ext = "jpg"
            else:
                info = PngImagePlugin.PngInfo()
                info.add_text("kiln.fields", json.dumps(rng.uniform(-1, 1, 69).round(4).tolist()))
                image.save(out, format="PNG", pnginfo=info)
                ext = "png"
            (root / "files" / f"{item_id}.{ext}").write_bytes(out.getvalue())
            rows.append({"id": item_id, "file": f"files/{item_id}.{ext}", "kind": kind, "class": cls,
                         "junk": None, "fields": None, "sha256": ""})
    (root / "index.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return len(rows)


def run_crawl(tmp: Path, demo: Path, params: dict, label: str) -> dict:
    params_path, out = tmp / f"params-{label}.yaml", tmp / f"raw-{label}"
    params_path.write_text(yaml.safe_dump(params))
    cmd = [sys.executable, "-m", "stages.crawl.__main__", "--params", str(params_path), "--demo", str(demo),
           "--out", str(out), "--work", str(tmp / f"work-{label}")]
    began = time.monotonic()
    done = subprocess.run(cmd, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    seconds = time.monotonic() - began
    if done.returncode:
        raise SystemExit(f"crawl failed ({done.returncode}): {done.stdout}")
    kept = len((out / "manifest.jsonl").read_text().splitlines())
    failed = len((out / "failures.jsonl").read_text().splitlines())
    return {"label": label, "seconds": seconds, "kept": kept, "failed": failed,
            "images_per_s": kept / seconds, "results_per_s": (kept + failed) / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, default=None, help="a rendered corpus (default: build one)")
    parser.add_argument("--per-class", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    base, crawl = params["base"], {**params["crawl"], "engine": "local"}
    with tempfile.TemporaryDirectory(prefix="kiln-bench-") as tmp_name:
        tmp, demo = Path(tmp_name), args.demo
        if demo is None or not (demo / "index.jsonl").is_file():
            demo = tmp / "demo"
            items = build_corpus(demo, base["classes"], args.per_class)
            print(f"corpus: built {items} items ({args.per_class} pots per class) in {demo}")
        print(f"cores: {os.cpu_count()}, concurrency {crawl['concurrency']}")
        for run in range(args.runs):
            for label, local in (("as-configured", crawl.get("local", {})), ("well-behaved", QUIET)):
                result = run_crawl(tmp, demo, {"base": base, "crawl": {**crawl, "local": {**local, **(
                    {} if label == "as-configured" else QUIET)}}}, f"{label}-{run}")
                print(f"{label:14s} run {run}: {result['kept']} kept + {result['failed']} failed "
                      f"in {result['seconds']:.1f}s -> {result['images_per_s']:.0f} images/s "
                      f"({result['results_per_s']:.0f} results/s), browser start included")


if __name__ == "__main__":
    main()
