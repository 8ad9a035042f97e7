"""Data-parallel throughput: train@classifier's training images/s on one process against N
DDP processes (torchrun; gloo on CPU, NCCL on CUDA), through the real stage.

    python bench/ddp.py [--arch bnconv|mobilenet_v2] [--images 2048] [--epochs 4] [--runs 1x2 1x1 2x1]

Synthetic data in a temporary folder (random pixels: throughput does not care what they
show): 64-px shards for bnconv, an image store of 128-px JPEGs for a backbone (at
``--size``). Each configuration runs ``python -m stages.train classifier`` with
``train.classifier.nproc`` set, and reports the median of the per-epoch ``images_per_second``
the stage logs (all ranks' images over the slowest rank's time), the first epoch left out
(warm-up). A run ``PxT`` is P processes of T torch threads each (OMP_NUM_THREADS); the
default compares one process on every core, one process on one thread, and two processes
sharing the cores.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from stages.shared.shards import Shard, save_shard
from stages.shared.store import write_store

CLASSES = ["a", "b"]


def synthetic_shard(n: int, size: int, seed: int) -> Shard:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=generator)
    return Shard(images, torch.arange(n) % len(CLASSES), list(CLASSES))


def synthetic_store(root: Path, name: str, n: int, seed: int) -> None:
    """``n`` random 160x128 JPEGs written as an image store (what split writes for a backbone)."""
    rng, files = np.random.default_rng(seed), root / f"{name}-files"
    files.mkdir(parents=True)
    paths = []
    for i in range(n):
        path = files / f"{i:06d}.jpg"
        Image.fromarray(rng.integers(0, 256, (128, 160, 3), dtype=np.uint8)).save(path, quality=90)
        paths.append(str(path))
    sha = [hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths]
    write_store(root / "full", name, paths, [i % len(CLASSES) for i in range(n)], CLASSES, sha, size=128)


def write_params(root: Path, args, nproc: int) -> Path:
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    data["base"].update(classes=CLASSES, image_size=64, threads=0)
    data["families"] = ["classifier"]
    data["train"] = {"classifier": {**data["train"]["classifier"], "arch": args.arch, "epochs": args.epochs,
                                    "patience": 0, "batch_size": args.batch_size, "nproc": nproc}}
    if args.arch != "bnconv":
        data["train"]["classifier"].update(weights=None, input_size=args.size)
        data["train"]["classifier"]["phases"] = {**data["train"]["classifier"]["phases"], "probe_epochs": 0,
                                                 "unfreeze": "all"}
    path = root / f"params-{nproc}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def run_stage(root: Path, args, nproc: int, threads: int) -> float:
    """Median training images/s over epochs 2.. of one stage run on ``nproc`` processes."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(threads)}
    out = root / f"run-{nproc}x{threads}"
    cmd = [sys.executable, "-m", "stages.train", "classifier", "--train", str(root / "train.pt"),
           "--val", str(root / "val.pt"), "--store", str(root / "full"), "--models", str(out / "models"),
           "--metrics", str(out / "metrics"), "--params", str(write_params(root, args, nproc))]
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"bench/ddp.py: nproc {nproc} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    [tsv] = (out / "metrics/classifier/plots").rglob("images_per_second.tsv")
    rates = [float(line.split("\t")[-1]) for line in tsv.read_text().splitlines()[1:]]
    return statistics.median(rates[1:] or rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="bnconv", help="bnconv (64-px shards) or a backbone (image store)")
    parser.add_argument("--images", type=int, default=2048, help="training images")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--size", type=int, default=96, help="a backbone's input size")
    cores = os.cpu_count() or 1
    parser.add_argument("--runs", nargs="+", default=[f"1x{cores}", "1x1", f"2x{max(1, cores // 2)}"],
                        help="PxT: P processes of T threads each")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kiln-ddp-") as tmp:
        root = Path(tmp)
        save_shard(root / "train.pt", synthetic_shard(args.images, 64, 0))
        save_shard(root / "val.pt", synthetic_shard(256, 64, 1))
        if args.arch != "bnconv":
            synthetic_store(root, "train", args.images, 0)
            synthetic_store(root, "val", 256, 1)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        results = {run: run_stage(root, args, *map(int, run.split("x"))) for run in args.runs}
    base = results[args.runs[0]]
    for run, rate in results.items():
        nproc, threads = run.split("x")
        print(f"{args.arch:13s} {nproc} process(es) x {threads} thread(s): {rate:8.1f} images/s "
              f"({rate / base:.2f}x of {args.runs[0]})")
    print(f"{args.images} images, batch {args.batch_size} in all, {args.epochs} epochs, {os.cpu_count()} cores, {device}")


if __name__ == "__main__":
    main()
