"""Time train@/evaluate@ for the generative families on demo-sized data.

    python bench/generative.py [--families dcgan vae autoencoder] [--epochs 2] [--n-train 1400]
                               [--size 64] [--threads 2] [--shards DIR] [--set train.vae.beta=4]

Without --shards it renders toy pots (tests/generative_toy.py) at the demo's sizes; with
--shards DIR it uses DIR/{train,val,test}.pt (e.g. data/split after `dvc repro split`).
Runs in a temp directory with the repo's params.yaml defaults, overriding epochs, and prints
seconds per epoch (from dvclive's epoch_seconds), total train and evaluate seconds, and the
evaluation metrics.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=["dcgan", "vae", "autoencoder"])
    parser.add_argument("--epochs", type=int, default=0, help="override each family's epochs (0: params.yaml)")
    parser.add_argument("--n-train", type=int, default=1400)
    parser.add_argument("--n-test", type=int, default=300)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--shards", type=Path, help="directory with train.pt, val.pt, test.pt")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a params key, e.g. train.vae.beta=4 (YAML value)")
    parser.add_argument("--no-eval", action="store_true")
    parser.add_argument("--keep", type=Path, help="work in this directory and keep it (pictures, models)")
    return parser.parse_args()


def bench_params(args) -> dict:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["base"].update(image_size=args.size, threads=args.threads, device="cpu")
    params["families"] = list(args.families)
    for family in args.families:
        params["train"][family]["image_size"] = args.size
        if args.epochs:
            params["train"][family]["epochs"] = args.epochs
        params["evaluate"][family] = params["evaluate"].get(family) or {}
    if "dcgan" in args.families:
        params["evaluate"]["dcgan"]["classifier"] = ""   # no trained classifier in a bench dir
    for pair in args.set:
        key, value = pair.split("=", 1)
        *parents, leaf = key.split(".")
        node = params
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return params


def shard_paths(args, workdir: Path) -> dict:
    if args.shards:
        return {s: (args.shards / f"{s}.pt").resolve() for s in ("train", "val", "test")}
    from generative_toy import write_shards

    return write_shards(workdir / "data", args.n_train, args.n_test, args.size)


def epoch_seconds(metrics_dir: Path, name: str = "epoch_seconds") -> list[float]:
    tsv = metrics_dir / "plots" / "metrics" / f"{name}.tsv"
    with open(tsv) as fh:
        return [float(row[name]) for row in csv.DictReader(fh, delimiter="\t")]


def main() -> None:
    args = parse_args()
    import stages.evaluate.__main__ as evaluate_stage
    import stages.train.__main__ as train_stage

    with tempfile.TemporaryDirectory(prefix="kiln-bench-") as tmp:
        work = args.keep.resolve() if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        paths = shard_paths(args, work)
        (work / "params.yaml").write_text(yaml.safe_dump(bench_params(args)))
        os.chdir(work)
        for family in args.families:
            start = time.perf_counter()
            train_stage.main([family, "--train", str(paths["train"]), "--val", str(paths["val"])])
            trained = time.perf_counter() - start
            per_epoch = epoch_seconds(Path("metrics/train") / family)
            cpu = epoch_seconds(Path("metrics/train") / family, "epoch_cpu_seconds")
            print(f"BENCH {family}: train {trained:.1f}s, epochs {len(per_epoch)}, "
                  f"wall s/epoch {', '.join(f'{s:.1f}' for s in per_epoch)}, "
                  f"cpu s/epoch {', '.join(f'{s:.1f}' for s in cpu)}", flush=True)
            if args.no_eval:
                continue
            start = time.perf_counter()
            evaluate_stage.main([family, "--test", str(paths["test"]), "--train", str(paths["train"])])
            metrics = json.loads(Path(f"metrics/eval/{family}/metrics.json").read_text())[family]
            print(f"BENCH {family}: evaluate {time.perf_counter() - start:.1f}s, metrics "
                  + json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()}), flush=True)


if __name__ == "__main__":
    main()
