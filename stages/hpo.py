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
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from stages.schema import ParamsError, bounds, from_dict, to_dict


@dataclass
class Dimension:
    name: str                                   # dotted key of train.<family>, e.g. head.size
    type: Literal["real", "integer", "categorical"] = "real"
    low: float | None = None
    high: float | None = None
    prior: Literal["uniform", "log-uniform"] = "uniform"
    values: list[Any] = field(default_factory=list)   # categorical choices
    default: Any = None                         # the first point evaluated; null: the config's value

    def validate(self, path: str) -> None:
        if self.type == "categorical":
            if not self.values:
                raise ParamsError(f"{path}.values", "a categorical dimension needs a non-empty list")
        else:
            self._validate_bounds(path)
        if self.default is not None and not self.contains(self.default):
            raise ParamsError(f"{path}.default", f"{self.default!r} is outside the dimension")

    def _validate_bounds(self, path: str) -> None:
        if self.low is None or self.high is None or not self.low < self.high:
            raise ParamsError(path, f"{self.type} needs low < high (got low={self.low}, high={self.high})")
        if self.prior == "log-uniform" and self.low <= 0:
            raise ParamsError(f"{path}.low", "must be > 0 with prior: log-uniform")
        if self.type == "integer" and (self.low != int(self.low) or self.high != int(self.high)):
            raise ParamsError(path, "integer bounds must be whole numbers")

    def contains(self, value: Any) -> bool:
        if self.type == "categorical":
            return value in self.values
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        return self.low <= value <= self.high and (self.type == "real" or value == int(value))


def decathlon_space() -> list[Dimension]:
    """The decathlon project's search space; its defaults form the first point."""
    return [
        Dimension("epochs", "integer", 1, 10, default=3),
        Dimension("head.size", "integer", 6, 2048, "log-uniform", default=256),
        Dimension("lr", "real", 1e-6, 1e-2, "log-uniform", default=1e-3),
        Dimension("head.dropout", "real", 0.0, 0.9, default=0.3),
        Dimension("phases.unfreeze", "categorical", values=["last", "none"], default="last"),
        Dimension("head.layers", "integer", 1, 3, default=1),
        Dimension("head.activation", "categorical", values=["relu", "tanh"], default="relu"),
        Dimension("class_weights", "categorical", values=["none", "balanced"], default="none"),
    ]


@dataclass
class HpoConfig:
    n_calls: int = field(default=20, metadata=bounds(ge=0))       # 0: no search (empty best params)
    n_initial_points: int = field(default=10, metadata=bounds(ge=0))
    acq_func: Literal["EI", "PI", "LCB", "gp_hedge"] = "EI"
    base_estimator: Literal["GP", "RF", "ET", "GBRT"] = "GP"
    n_jobs: int = field(default=1, metadata=bounds(ge=1))       # points trained at once
    score: Literal["accuracy", "loss"] = "accuracy"              # validation accuracy (max) or loss (min)
    max_train: int = field(default=0, metadata=bounds(ge=0))     # subsample the training shard; 0: all
    trial_epochs: int = field(default=0, metadata=bounds(ge=0))  # epochs of a trial unless searched; 0: the config's
    space: list[Dimension] = field(default_factory=decathlon_space)
    trial: dict[str, Any] = field(default_factory=dict)          # the trials' base train config

    def validate(self, path: str) -> None:
        if not self.space:
            raise ParamsError(f"{path}.space", "needs at least one dimension")
        names = [d.name for d in self.space]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise ParamsError(f"{path}.space.{i}.name", f"{name!r} appears twice")


# --- the search space -------------------------------------------------------------
def skopt_dimension(dim: Dimension):
    from skopt.space import Categorical, Integer, Real

    if dim.type == "categorical":
        return Categorical(list(dim.values), name=dim.name)
    if dim.type == "integer":
        return Integer(int(dim.low), int(dim.high), prior=dim.prior, name=dim.name)
    return Real(float(dim.low), float(dim.high), prior=dim.prior, name=dim.name)


def plain(value: Any) -> Any:
    """numpy scalars (skopt hands them out) -> python values, for JSON and config checks."""
    return value.item() if hasattr(value, "item") else value


def get_dotted(data: dict, name: str, where: str) -> Any:
    node = data
    for part in name.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ParamsError(where, f"{name!r} is not a key of the train config")
        node = node[part]
    return node


def apply_overrides(cfg: Any, overrides: dict[str, Any], where: str) -> Any:
    """A new config of ``type(cfg)`` with dotted-key ``overrides``, validated by the schema."""
    data = json.loads(json.dumps(to_dict(cfg)))   # deep copy as plain data
    for name, value in overrides.items():
        get_dotted(data, name, where)
        *parents, leaf = name.split(".")
        node = data
        for part in parents:
            node = node[part]
        node[leaf] = plain(value)
    return from_dict(type(cfg), data, where)


def default_point(hpo: HpoConfig, cfg: Any) -> list[Any]:
    """The first point: each dimension's ``default``, else the train config's value clipped in."""
    data, point = to_dict(cfg), []
    for i, dim in enumerate(hpo.space):
        value = dim.default if dim.default is not None else get_dotted(data, dim.name, f"hpo.space.{i}.name")
        if not dim.contains(value):
            value = dim.values[0] if dim.type == "categorical" else min(max(value, dim.low), dim.high)
        point.append(int(value) if dim.type == "integer" else value)
    return point


# --- the trial log (resume) -------------------------------------------------------
class TrialLog:
    """Finished trials, persisted atomically after each one; ignored when the fingerprint differs."""

    def __init__(self, path: Path, fingerprint: str):
        self.path, self.fingerprint = Path(path), fingerprint
        self.trials: list[dict] = []
        self.resumed = 0
        if self.path.is_file():
            try:
                data = json.loads(self.path.read_text())
            except (OSError, json.JSONDecodeError):
                data = {}  # unreadable: start afresh (writes are atomic, so this is a foreign file)
            if data.get("fingerprint") == fingerprint:
                self.trials = list(data.get("trials", []))
                self.resumed = len(self.trials)

    def add(self, trial: dict) -> None:
        from stages.io import write_json

        self.trials.append(trial)
        write_json(self.path, {"fingerprint": self.fingerprint, "trials": self.trials})


def objective_value(result: dict, score: str) -> float:
    """What skopt minimises: -accuracy, or the loss (a diverged run counts as very bad)."""
    value = -float(result["val_accuracy"]) if score == "accuracy" else float(result["val_loss"])
    return value if value == value and abs(value) != float("inf") else 1e3


def _next_points(opt, hpo: HpoConfig, log: TrialLog, first: list[Any], n: int) -> list[list[Any]]:
    """Up to ``n`` points; the default point first when it has not been evaluated yet."""
    points = []
    if not any(t.get("default") for t in log.trials):
        points.append(first)
    if n - len(points) > 0:
        points += [[plain(v) for v in x] for x in opt.ask(n_points=n - len(points))]
    return points


def run_search(hpo: HpoConfig, first: list[Any], log: TrialLog, evaluate, *, seed: int,
               progress: bool = True) -> list[dict]:
    """Ask/tell until ``n_calls`` trials are logged; ``evaluate(points)`` yields (i, result)."""
    from skopt import Optimizer
    from tqdm import tqdm

    from stages.skopt_compat import patch_skopt

    patch_skopt()
    names = [d.name for d in hpo.space]
    opt = Optimizer([skopt_dimension(d) for d in hpo.space], base_estimator=hpo.base_estimator,
                    acq_func=hpo.acq_func, n_initial_points=hpo.n_initial_points, random_state=seed)
    if log.trials:  # replay what a killed run finished
        opt.tell([t["x"] for t in log.trials], [t["y"] for t in log.trials])
    bar = tqdm(total=hpo.n_calls, initial=len(log.trials), desc="hpo", unit="call", disable=not progress)
    while len(log.trials) < hpo.n_calls:
        points = _next_points(opt, hpo, log, first, min(hpo.n_jobs, hpo.n_calls - len(log.trials)))
        for i, result in evaluate([dict(zip(names, x)) for x in points]):
            y = objective_value(result, hpo.score)
            opt.tell(points[i], y)
            log.add({"call": len(log.trials) + 1, "x": points[i], "y": y, "params": dict(zip(names, points[i])),
                     "default": points[i] is first, **result})
            bar.update(1)
    bar.close()
    return log.trials


# --- evaluating points: in this process, or in a pool of worker processes ---------------
_WORKER: dict[str, Any] = {}


def trial_config(params, family: str):
    """The trials' base config: ``hpo.<family>.trial`` parsed as the family's train config."""
    from stages.families import get_family
    from stages.schema import from_dict

    return from_dict(get_family(family).train_config, params.hpo[family].trial, f"hpo.{family}.trial")


def _worker_init(params_path: str, family: str, train_path: str, val_path: str, threads: int) -> None:
    """Load params and shards once per process; trials then train from memory."""
    import torch

    from stages.params import load_params
    from stages.runtime import pick_device
    from stages.shards import load_shard

    params = load_params(params_path)
    hpo = params.hpo[family]
    train = load_shard(train_path)
    if hpo.max_train and len(train) > hpo.max_train:
        pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(params.base.seed))
        train = train.subset(pick[:hpo.max_train].sort().values)
    torch.set_num_threads(max(1, threads))
    _WORKER.update(params=params, family=family, cfg=trial_config(params, family),
                   train=train, val=load_shard(val_path),
                   device=pick_device(params.base.device), trainer=trial_function(family))


def trial_function(family: str):
    """The family's ``hpo_trial(cfg, train, val, *, params, device) -> {val_accuracy, val_loss}``."""
    import importlib

    from stages.families import FAMILY_MODULES, get_family

    get_family(family)
    trainer = getattr(importlib.import_module(FAMILY_MODULES[family]), "hpo_trial", None)
    if trainer is None:
        raise ParamsError(f"hpo.{family}", f"family {family!r} does not support hpo (no hpo_trial)")
    return trainer


def _worker_trial(overrides: dict[str, Any]) -> dict:
    from stages.runtime import seed_everything

    w = _WORKER
    trial_epochs = w["params"].hpo[w["family"]].trial_epochs
    if trial_epochs and "epochs" not in overrides:  # a short run, unless epochs is searched
        overrides = {"epochs": trial_epochs, **overrides}
    cfg = apply_overrides(w["cfg"], overrides, f"hpo.{w['family']}.space")
    seed_everything(w["params"].base.seed)   # every trial starts from the same initialisation
    start = time.perf_counter()
    result = w["trainer"](cfg, w["train"], w["val"], params=w["params"], device=w["device"])
    return {"val_accuracy": float(result["val_accuracy"]), "val_loss": float(result["val_loss"]),
            "seconds": round(time.perf_counter() - start, 2)}


def in_process(points: list[dict]):
    for i, overrides in enumerate(points):
        yield i, _worker_trial(overrides)


class PoolEvaluator:
    """Trains a batch of points at once, one per worker process (spawned: no forked torch state)."""

    def __init__(self, n_jobs: int, initargs: tuple):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.pool = ProcessPoolExecutor(n_jobs, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_worker_init, initargs=initargs)

    def __call__(self, points: list[dict]):
        from concurrent.futures import as_completed

        futures = {self.pool.submit(_worker_trial, p): i for i, p in enumerate(points)}
        for future in as_completed(futures):
            yield futures[future], future.result()

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)


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
    from stages.io import sha256_file

    settings = {k: v for k, v in to_dict(hpo).items() if k not in ("n_calls", "n_jobs", "trial")}
    digest = hashlib.sha256(json.dumps({"family": family, "hpo": settings, "base": to_dict(params.base),
                                        "train": _config_seen_by_trials(hpo, cfg)},
                                       sort_keys=True, default=str).encode())
    for path in data:
        digest.update(sha256_file(path).encode())
    return digest.hexdigest()[:16]


def best_trial(trials: list[dict]) -> dict:
    return min(trials, key=lambda t: (t["y"], t["call"]))


def trials_table(trials: list[dict], names: list[str], score: str) -> str:
    """CSV, one row per call: the score, the best so far, both metrics and every dimension's value."""
    key = "val_accuracy" if score == "accuracy" else "val_loss"
    pick = max if score == "accuracy" else min
    rows, best = [], None
    header = ["call", "score", "best_score", "val_accuracy", "val_loss", "seconds", *names]
    for t in trials:
        best = t[key] if best is None else pick(best, t[key])
        row = [t["call"], t[key], best, t["val_accuracy"], t["val_loss"], t["seconds"]]
        rows.append(",".join(str(v) for v in row + [t["params"][n] for n in names]))
    return ",".join(header) + "\n" + "\n".join(rows) + "\n"


def plot_convergence(trials: list[dict], score: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from stages.io import atomic_path

    key = "val_accuracy" if score == "accuracy" else "val_loss"
    values = [t[key] for t in trials]
    best = [max(values[:i + 1]) if score == "accuracy" else min(values[:i + 1]) for i in range(len(values))]
    calls = [t["call"] for t in trials]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot(calls, values, "o", alpha=0.6, label="trial")
    ax.step(calls, best, where="post", label="best so far")
    ax.set(xlabel="call", ylabel=f"validation {score}", title="hpo convergence" if trials else "hpo: no search")
    if trials:
        ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def write_outputs(trials: list[dict], hpo: HpoConfig, family: str, cfg: Any, out_dir: Path,
                  model_dir: Path) -> dict:
    from stages.io import write_json, write_text

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
    write_json(out_dir / "metrics.json", metrics)
    return metrics


def apply_best_params(cfg: Any, path: Path, family: str) -> Any:
    """train@<family> with ``use_hpo: true``: the config with the search's best values over it."""
    from stages.params import StageError

    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise StageError(f"{path}: no best params (run hpo@{family} first, or set use_hpo: false)") from None
    except (OSError, json.JSONDecodeError) as err:
        raise StageError(f"{path}: not a readable best-params file ({err.__class__.__name__})") from None
    if data.get("family") != family or not isinstance(data.get("params"), dict):
        raise StageError(f"{path}: not a best-params file of family {family!r}")
    return apply_overrides(cfg, data["params"], f"{path}")


def check_space(hpo: HpoConfig, cfg: Any, family: str) -> None:
    """Fail before training if a dimension names no config key or allows a value the schema refuses."""
    data = to_dict(cfg)
    for i, dim in enumerate(hpo.space):
        where = f"hpo.{family}.space.{i}"
        get_dotted(data, dim.name, f"{where}.name")
        values = dim.values if dim.type == "categorical" else [dim.low, dim.high]
        for value in values:
            value = int(value) if dim.type == "integer" else value
            try:
                apply_overrides(cfg, {dim.name: value}, f"train.{family}")
            except ParamsError as err:
                raise ParamsError(where, f"{value!r} for {dim.name} is refused: {err.message}") from None


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
    from stages.io import write_json, write_text

    write_json(model_dir / "best_params.json", {"family": family, "params": {}, "skipped": reason})
    write_text(out_dir / "trials.csv", "call,score,best_score\n")
    plot_convergence([], "accuracy", out_dir / "convergence.png")
    write_json(out_dir / "metrics.json", {"n_calls": 0})
    print(f"hpo@{family}: nothing to search ({reason})")


def main(argv=None) -> None:
    import os

    from stages.params import StageError, load_params
    from stages.train import RESUME_DIR

    args = parse_args(argv)
    params = load_params(args.params)
    if args.family not in params.families:
        raise StageError(f"family {args.family!r} is not listed in params.yaml families: {params.families}")
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
    from stages.params import run_stage

    run_stage(main)
