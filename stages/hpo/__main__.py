"""hpo@<family>: python -m stages.hpo classifier --train T.pt --val V.pt --out DIR --models DIR.

Bayesian search (scikit-optimize) over the space declared in ``hpo.<family>.space``:
each dimension names a dotted key of the family's train config (``lr``, ``head.size``,
...) and the objective is the validation score of a short training run, on the shards
held in memory. Trials start from ``hpo.<family>.trial`` (the family's train config, its
defaults where a key is left out), not from ``train.<family>``: the search depends only on
its own section, so an experiment on ``train.<family>`` reruns train and evaluate alone. ``n_jobs`` > 1 asks for that many points at once (constant liar)
and trains them in a process pool.

Resumable: every finished trial is appended to ``.kiln/resume/hpo-<family>.json``
(atomically, outside DVC's outputs); a rerun with the same fingerprint (space, search
settings, train config, data) replays the finished trials into the optimizer with
``tell`` and continues from the next call, so a SIGKILL costs at most the calls in flight.

For a family without hpo support, or with ``n_calls: 0``, the stage writes an empty
``best_params.json`` at once, so ``train@<family>`` can depend on it uniformly.

Outputs: ``<out>/<family>/metrics.json`` (best score and params), ``trials.csv`` (a DVC
plot), ``convergence.png``, and ``<models>/hpo/<family>/best_params.json``, which
``train@<family>`` applies over its config when ``use_hpo: true``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from stages.common.errors import StageError
from stages.common.io import sha256_file, write_json, write_text
from stages.common.schema import to_dict
from stages.hpo.config import HpoConfig, load_hpo_params
from stages.hpo.search import (
    TrialLog,
    best_trial,
    check_space,
    default_point,
    plot_convergence,
    run_search,
    trials_table,
)
from stages.hpo.trials import (
    PoolEvaluator,
    _worker_init,
    in_process,
    trial_config,
    trial_function,
)
from stages.shared.overrides import apply_overrides
from stages.shared.training import RESUME_DIR

# --- evaluating points: in this process, or in a pool of worker processes ---------------
_WORKER: dict[str, Any] = {}


# --- outputs ------------------------------------------------------------------------
def _config_seen_by_trials(hpo: HpoConfig, cfg: Any) -> dict:
    """The train config less what every trial overrides (searched keys with a default, and
    epochs under trial_epochs) and use_hpo: changing those leaves the finished trials valid."""
    data = to_dict(cfg)
    hidden = [d.name for d in hpo.space if d.default is not None] + ["use_hpo"]
    if hpo.trial_epochs:
        hidden.append("epochs")
    for name in hidden:
        *parents, leaf = name.split(".")
        node = data
        for part in parents:
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(leaf, None)
    return data


def search_fingerprint(params, family: str, hpo: HpoConfig, cfg: Any, data: list[Path]) -> str:
    """What a resumed search must share with the killed one (n_calls and n_jobs may change)."""

    settings = {k: v for k, v in to_dict(hpo).items() if k not in ("n_calls", "n_jobs", "trial")}
    digest = hashlib.sha256(json.dumps({"family": family, "hpo": settings, "base": to_dict(params.base),
                                        "train": _config_seen_by_trials(hpo, cfg)},
                                       sort_keys=True, default=str).encode())
    for path in data:
        digest.update(sha256_file(path).encode())
    return digest.hexdigest()[:16]


def write_outputs(trials: list[dict], hpo: HpoConfig, family: str, cfg: Any, out_dir: Path,
                  model_dir: Path) -> dict:

    names = [d.name for d in hpo.space]
    best = best_trial(trials)
    key = "val_accuracy" if hpo.score == "accuracy" else "val_loss"
    best_cfg = apply_overrides(cfg, best["params"], f"hpo.{family}.space")
    metrics = {"score": key, "best": best[key], "best_call": best["call"], "n_calls": len(trials),
               "best_params": best["params"]}
    write_json(model_dir / "best_params.json", {"family": family, "score": key, "best": best[key],
                                                 "params": best["params"], "config": to_dict(best_cfg)})
    write_text(out_dir / "trials.csv", trials_table(trials, names, hpo.score))
    plot_convergence(trials, hpo.score, out_dir / "convergence.png")
    write_json(out_dir / "metrics.json", {family: {"hpo": metrics}})   # dvc exp show: <family>.hpo.<name>
    return metrics


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="kiln hpo", description=__doc__.splitlines()[0])
    parser.add_argument("family")
    parser.add_argument("--train", type=Path, required=True, help="training shard (.pt)")
    parser.add_argument("--val", type=Path, required=True, help="validation shard (.pt)")
    parser.add_argument("--out", type=Path, default=Path("metrics/hpo"))
    parser.add_argument("--models", type=Path, default=Path("models/hpo"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    return parser.parse_args(argv)


def _evaluator(args, hpo: HpoConfig, threads: int):
    initargs = (str(args.params), args.family, str(args.train), str(args.val))
    if hpo.n_jobs == 1:
        _worker_init(*initargs, threads)
        return in_process, lambda: None
    pool = PoolEvaluator(hpo.n_jobs, (*initargs, max(1, threads // hpo.n_jobs)))
    return pool, pool.close


def pass_through(family: str, out_dir: Path, model_dir: Path, reason: str) -> None:
    """A family without a search: an empty best-params file, so train@<family> can depend on it."""

    write_json(model_dir / "best_params.json", {"family": family, "params": {}, "skipped": reason})
    write_text(out_dir / "trials.csv", "call,score,best_score\n")
    plot_convergence([], "accuracy", out_dir / "convergence.png")
    write_json(out_dir / "metrics.json", {family: {"hpo": {"n_calls": 0}}})
    print(f"hpo@{family}: nothing to search ({reason})")


def main(argv=None) -> None:


    args = parse_args(argv)
    params = load_hpo_params(args.params, args.family)
    out_dir, model_dir = args.out / args.family, args.models / args.family
    if args.family not in params.hpo:
        return pass_through(args.family, out_dir, model_dir, f"no hpo.{args.family} section")
    if params.hpo[args.family].n_calls == 0:
        return pass_through(args.family, out_dir, model_dir, f"hpo.{args.family}.n_calls is 0")
    for path in (args.train, args.val):
        if not path.is_file():
            raise StageError(f"{path}: missing input shard (run the split/augment stages first)")
    hpo, cfg = params.hpo[args.family], trial_config(params, args.family)
    check_space(hpo, cfg, args.family)
    trial_function(args.family)
    log = TrialLog(RESUME_DIR / f"hpo-{args.family}.json",
                   search_fingerprint(params, args.family, hpo, cfg, [args.train, args.val]))
    evaluate, close = _evaluator(args, hpo, params.base.threads or os.cpu_count() or 1)
    start = time.perf_counter()
    try:
        trials = run_search(hpo, default_point(hpo, cfg), log, evaluate, seed=params.base.seed)
    finally:
        close()
    metrics = write_outputs(trials[:hpo.n_calls], hpo, args.family, cfg, out_dir, model_dir)
    shown = ", ".join(f"{k}={v}" for k, v in metrics["best_params"].items())
    print(f"hpo@{args.family}: {metrics['n_calls']} calls ({log.resumed} resumed) in "
          f"{time.perf_counter() - start:.1f}s; best {metrics['score']} {metrics['best']:.4f} "
          f"at call {metrics['best_call']}: {shown}")


if __name__ == "__main__":
    from stages.common.errors import run_stage

    run_stage(main)
