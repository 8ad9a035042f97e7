"""Sweeps on DVC's queue: a 3-point grid queued with one ``-S a,b,c`` and run by two workers
(``dvc queue start -j 2``) in a temporary git + DVC repo; ``dvc exp show`` lists the three
experiments with their params and metrics. Then hpo's search hands its points to the queue
(``python -m stages.tools.sweep``) and a second round learns from the first."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from stages.tools.sweep import experiments
from tests.test_ddp import make_project
from tests.test_e2e import run, tiny_params

e2e = pytest.mark.e2e
LRS = ("0.001", "0.002", "0.004")


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    data = tiny_params()
    data["families"] = ["classifier"]
    for section in ("train", "evaluate", "hpo"):
        data[section] = {"classifier": data[section]["classifier"]}
    data["hpo"]["classifier"]["n_calls"] = 0
    data["train"]["classifier"]["epochs"] = 2
    root = make_project(tmp_path_factory.mktemp("kiln-queue"), data)
    yield root
    run(["dvc", "queue", "stop", "--kill"], root, check=False)   # no worker outlives the test


def wait_for_queue(project: Path, timeout: float = 900) -> str:
    """``dvc queue status`` once nothing is queued or running (fails after ``timeout`` s)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = run(["dvc", "queue", "status"], project).stdout
        rows = [line for line in status.splitlines()[1:] if line.strip()]
        if not any(" Queued " in f" {row} " or " Running " in f" {row} " for row in rows):
            return status
        time.sleep(3)
    raise AssertionError(f"the queue did not finish in {timeout} s:\n{status}")


def find_key(tree: dict, key: str):
    """The first value under ``key`` at any depth (metrics may sit under the family's name)."""
    if key in tree:
        return tree[key]
    for value in tree.values():
        if isinstance(value, dict) and (found := find_key(value, key)) is not None:
            return found
    return None


@e2e
def test_a_three_point_sweep_runs_on_two_workers(project):
    queued = run(["dvc", "exp", "run", "--queue", "-S", f"train.classifier.lr={','.join(LRS)}", "-n", "lr"], project)
    assert queued.stdout.count("Queued experiment") == 3, queued.stdout
    started = run(["dvc", "queue", "start", "-j", "2"], project)
    assert "2" in started.stdout, started.stdout
    status = wait_for_queue(project)
    assert status.count("Success") == 3, status
    found = {name: data for name, data in experiments(json.loads(run(["dvc", "exp", "show", "--json"], project).stdout)).items()
             if name.startswith("lr-")}
    assert sorted(found) == ["lr-1", "lr-2", "lr-3"], sorted(found)
    lrs, accuracies = set(), []
    for data in found.values():
        lrs.add(str(data["params"]["params.yaml"]["data"]["train"]["classifier"]["lr"]))
        accuracies.append(find_key(data["metrics"]["metrics/eval/classifier/metrics.json"]["data"], "accuracy"))
    assert lrs == set(LRS)
    assert all(0.0 <= acc <= 1.0 for acc in accuracies)
    table = run(["dvc", "exp", "show", "--csv"], project).stdout   # the table, unabridged
    assert all(name in table for name in ("lr-1", "lr-2", "lr-3"))


@e2e
def test_hpo_points_go_to_the_queue_and_the_next_round_learns_from_them(project):
    sweep = ["python", "-m", "stages.tools.sweep", "classifier", "--name", "bo"]
    first = run([*sweep, "--points", "2"], project)
    assert "queued 2" in first.stdout and "-n bo-1" in first.stdout and "-n bo-2" in first.stdout
    run(["dvc", "queue", "start", "-j", "2"], project)
    assert wait_for_queue(project).count("Success") == 5
    second = run([*sweep, "--points", "1", "--dry-run"], project)
    assert "told 2 finished" in second.stdout and "-n bo-3" in second.stdout


def test_finished_experiments_are_told_with_their_values():
    from stages.hpo.config import HpoConfig
    from stages.tools.sweep import finished_points, queue_commands

    hpo = HpoConfig()
    def exp(name, lr, best):
        params = {"params.yaml": {"data": {"train": {"classifier": {
            "lr": lr, "dropout": 0.1, "head_dropout": 0.3, "class_weights": "none"}}}}}
        metrics = {"metrics/train/classifier/metrics.json": {"data": {"classifier": {"best": best}}}} if best else {}
        return {"name": name, "data": {"params": params, "metrics": metrics}}
    shown = [{"rev": "workspace"}, {"experiments": [{"revs": [
        exp("bo-1", 0.001, {"val_accuracy": 0.9, "val_loss": 0.3}),
        exp("bo-4", 0.002, None),                                   # still queued: not told
        exp("lr-1", 0.004, {"val_accuracy": 1.0, "val_loss": 0.1})]}]}]   # another sweep
    points, values, highest = finished_points(shown, "classifier", hpo, "bo")
    assert points == [[0.001, 0.1, 0.3, "none"]] and values == [-0.9] and highest == 4
    points, values, highest = finished_points(shown, "classifier", hpo, "bo", learn=("lr",))
    assert values == [-0.9, -1.0] and highest == 4                  # another machine's, told too
    [command] = queue_commands("classifier", hpo, [[1.5e-05, 0.2, 0.3, "balanced"]], "bo", highest + 1)
    assert command[:6] == ["dvc", "exp", "run", "--queue", "-n", "bo-5"]
    assert "train.classifier.lr=1.5e-05" in command and "train.classifier.class_weights=balanced" in command
