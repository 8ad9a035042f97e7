"""evaluate@<family>: python -m stages.evaluate <family> --test T.pt --store DIR --models DIR --uses F --out DIR.

Writes ``<out>/<family>/metrics.json`` (DVC metrics, under the family's name:
``{"<family>": {...}}``) and plots/pictures under
``<out>/<family>/`` (DVC plots); the family decides what it measures. A classifier
backbone scores the image store's test split (``--store``) at its own input size.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from stages.common.errors import StageError, run_stage
from stages.common.io import write_json
from stages.evaluate.uses import check_uses
from stages.families import family_module, load_family_params
from stages.shared.runtime import pick_device, seed_everything, set_threads


@dataclass
class EvalContext:
    params: Any             # base, families, train.<family>, evaluate.<family>
    family: str
    cfg: Any                # the family's evaluate config dataclass (may be None)
    train_cfg: Any          # the family's train config, for rebuilding models
    test_shard: Path
    model_dir: Path         # models/<family>
    models_root: Path       # models/, to reach other families' models (e.g. the classifier)
    out_dir: Path           # metrics/eval/<family>: metrics.json, plots, pictures
    device: torch.device
    train_shard: Path | None = None   # for scores of the representation itself (vae: MIG/DCI)
    store_dir: Path = Path("data/split/full")   # image store (test) at full resolution

    @property
    def checkpoint_path(self) -> Path:
        return self.model_dir / "model.pt"


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="kiln evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("family")
    parser.add_argument("--test", type=Path, required=True, help="held-out shard (.pt)")
    parser.add_argument("--train", type=Path, help="training shard, for families that also score their "
                        "representation on it (vae: MIG/DCI over train + test images)")
    parser.add_argument("--store", type=Path, default=Path("data/split/full"),
                        help="image store whose test split a classifier backbone is scored on")
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--uses", type=Path, help="the uses stage's <family>.json: other models this "
                        "evaluation reads, checked against their recorded sha256")
    parser.add_argument("--out", type=Path, default=Path("metrics/eval"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    return parser.parse_args(argv)


def main(argv=None) -> None:

    args = parse_args(argv)
    params = load_family_params(args.params, args.family, ("train", "evaluate"))
    model_dir = args.models / args.family
    if not (model_dir / "model.pt").is_file():
        raise StageError(f"{model_dir / 'model.pt'}: no trained model (run train@{args.family} first)")
    if not args.test.is_file():
        raise StageError(f"{args.test}: missing test shard (run the split stage first)")
    if args.train is not None and not args.train.is_file():
        raise StageError(f"{args.train}: missing training shard (run the split stage first)")
    if args.uses is not None:
        check_uses(args.uses)
    set_threads(params.base.threads)
    seed_everything(params.base.seed)
    ctx = EvalContext(params=params, family=args.family, cfg=params.evaluate.get(args.family),
                      train_cfg=params.train.get(args.family), test_shard=args.test, model_dir=model_dir,
                      models_root=args.models, out_dir=args.out / args.family,
                      device=pick_device(params.base.device),
                      train_shard=args.train, store_dir=args.store)
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    metrics = family_module(args.family, "evaluate").evaluate(ctx)
    write_json(ctx.out_dir / "metrics.json", {args.family: metrics})   # dvc exp show: <family>.<name>
    shown = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, (int, float)))
    print(f"evaluate@{args.family}: {shown} ({time.perf_counter() - start:.1f}s)")


if __name__ == "__main__":
    run_stage(main)
