"""The Bayesian search itself (scikit-optimize ask/tell), resumable from a trial log."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stages.common.io import atomic_path, write_json
from stages.common.schema import ParamsError, to_dict
from stages.hpo.config import Dimension, HpoConfig
from stages.hpo.skopt_compat import patch_skopt
from stages.shared.overrides import apply_overrides, get_dotted, plain


# --- the search space -------------------------------------------------------------
def skopt_dimension(dim: Dimension):
    from skopt.space import Categorical, Integer, Real

    if dim.type == "categorical":
        return Categorical(list(dim.values), name=dim.name)
    if dim.type == "integer":
        return Integer(int(dim.low), int(dim.high), prior=dim.prior, name=dim.name)
    return Real(float(dim.low), float(dim.high), prior=dim.prior, name=dim.name)


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
