"""kiln sweep: hand hpo@<family>'s search to DVC's queue, a round at a time.

    python -m stages.tools.sweep classifier --points 4 [--name bo] [--dry-run]
    dvc queue start -j 2                  # here; then run the command again for the next round

Reads ``hpo.<family>`` (space, acquisition function, estimator, score), tells a
scikit-optimize Optimizer every finished experiment named ``<name>-<k>`` that ``dvc exp show``
lists (its ``train.<family>`` values and its training's best val accuracy or loss), asks it
for ``--points`` new points and queues each as ``dvc exp run --queue -n <name>-<k> -S
train.<family>.<key>=<value> ...``. The experiments are full ``train@<family>`` runs on
``train.<family>`` (not hpo's short trials). Machines sharing the git and DVC remotes each run
a round, ``dvc exp push origin``, and ``dvc exp pull origin`` before the next: every round then
knows every machine's results (use a different ``--seed`` per machine so first rounds differ).
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
from pathlib import Path
from typing import Any

from stages.common.errors import StageError
from stages.hpo.config import HpoConfig, load_hpo_params
from stages.hpo.search import objective_value, skopt_dimension
from stages.hpo.skopt_compat import patch_skopt
from stages.shared.overrides import plain


def _nested(tree: Any, keys: list[str]) -> Any:
    """The value at ``keys`` found at any depth of ``tree`` (metrics may sit under the family)."""
    if not isinstance(tree, dict):
        return None
    node = tree
    for key in keys:
        node = node.get(key) if isinstance(node, dict) else None
    if node is not None:
        return node
    return next((v for v in (_nested(child, keys) for child in tree.values()) if v is not None), None)


def experiments(shown: Any, found: dict | None = None) -> dict[str, dict]:
    """name -> data of every named experiment in ``dvc exp show --json`` output."""
    found = {} if found is None else found
    if isinstance(shown, dict):
        if shown.get("name") and isinstance(shown.get("data"), dict):
            found[shown["name"]] = shown["data"]
        for value in shown.values():
            experiments(value, found)
    elif isinstance(shown, list):
        for value in shown:
            experiments(value, found)
    return found


def finished_points(shown: Any, family: str, hpo: HpoConfig, prefix: str,
                    learn: tuple[str, ...] = ()) -> tuple[list[list], list[float], int]:
    """(points, objective values, highest ``<prefix>-<k>`` index) of the finished experiments
    named ``<p>-<k>`` for ``prefix`` and every prefix in ``learn`` (other machines' rounds)."""
    points, values, highest = [], [], 0
    pattern = re.compile(rf"({'|'.join(re.escape(p) for p in (prefix, *learn))})-(\d+)$")
    for name, data in experiments(shown).items():
        match = pattern.match(name)
        if not match:
            continue
        if match.group(1) == prefix:
            highest = max(highest, int(match.group(2)))
        config = _nested(data.get("params", {}), ["params.yaml", "data", "train", family]) or {}
        metrics = (data.get("metrics") or {}).get(f"metrics/train/{family}/metrics.json", {}).get("data")
        best = _nested(metrics, ["best"])
        point = [_nested(config, dim.name.split(".")) for dim in hpo.space]
        if best is None or any(v is None for v in point):
            continue   # queued, running or failed
        result = {"val_accuracy": best.get("val_accuracy"), "val_loss": best.get("val_loss")}
        points.append([int(v) if dim.type == "integer" else v for dim, v in zip(hpo.space, point)])
        values.append(objective_value(result, hpo.score))
    return points, values, highest


def ask(hpo: HpoConfig, points: list[list], values: list[float], n: int, seed: int) -> list[list]:
    """``n`` new points after telling the optimizer the finished ones."""
    from skopt import Optimizer

    patch_skopt()
    opt = Optimizer([skopt_dimension(d) for d in hpo.space], base_estimator=hpo.base_estimator,
                    acq_func=hpo.acq_func, n_initial_points=hpo.n_initial_points, random_state=seed)
    if points:
        opt.tell(points, values)
    return [[plain(v) for v in x] for x in opt.ask(n_points=n)]


def _value(value: Any) -> str:
    """A point's value as ``-S`` takes it (floats to 6 significant digits: readable names in exp show)."""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def queue_commands(family: str, hpo: HpoConfig, points: list[list], prefix: str, first: int) -> list[list[str]]:
    return [["dvc", "exp", "run", "--queue", "-n", f"{prefix}-{first + i}",
             *[arg for dim, v in zip(hpo.space, point) for arg in ("-S", f"train.{family}.{dim.name}={_value(v)}")]]
            for i, point in enumerate(points)]


def _dvc(command: list[str]) -> str:
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise StageError(f"{' '.join(command[:4])} failed: {(proc.stderr or proc.stdout).strip()[-400:]}")
    return proc.stdout


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="kiln sweep", description=__doc__.splitlines()[0])
    parser.add_argument("family")
    parser.add_argument("--points", type=int, default=4, help="experiments to queue this round")
    parser.add_argument("--name", default="bo", help="experiment name prefix (<name>-1, <name>-2, ...)")
    parser.add_argument("--learn", action="append", default=[], metavar="PREFIX",
                        help="also tell the optimizer experiments named PREFIX-<k> (another machine's)")
    parser.add_argument("--seed", type=int, default=0, help="the optimizer's random state")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--dry-run", action="store_true", help="print the commands, queue nothing")
    args = parser.parse_args(argv)
    params = load_hpo_params(args.params, args.family)
    if args.family not in params.hpo:
        raise StageError(f"hpo.{args.family}: no search space in {args.params}")
    hpo = params.hpo[args.family]
    points, values, highest = finished_points(json.loads(_dvc(["dvc", "exp", "show", "--json"])),
                                              args.family, hpo, args.name, tuple(args.learn))
    commands = queue_commands(args.family, hpo, ask(hpo, points, values, args.points, args.seed),
                              args.name, highest + 1)
    for command in commands:
        print(" ".join(command))
        if not args.dry_run:
            _dvc(command)
    print(f"kiln sweep: told {len(points)} finished experiment(s), "
          f"{'would queue' if args.dry_run else 'queued'} {len(commands)}; run them with dvc queue start -j N")


if __name__ == "__main__":
    from stages.common.errors import run_stage

    run_stage(main)
