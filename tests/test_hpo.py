"""hpo@classifier: skopt on current numpy, the search space schema, resume after SIGKILL,
outputs, and train@classifier consuming the best params."""
from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import stages.split.__main__ as split
from stages.common.schema import ParamsError, from_dict, to_dict
from stages.hpo.config import HpoConfig, decathlon_space
from stages.hpo.search import TrialLog, default_point, run_search
from stages.shared.overrides import apply_overrides
from tests.conftest import stage_env, write_params
from tests.helpers import shapes_dataset

SPACE = [
    {"name": "lr", "type": "real", "low": 1.0e-4, "high": 1.0e-2, "prior": "log-uniform", "default": 0.003},
    {"name": "epochs", "type": "integer", "low": 1, "high": 2},
    {"name": "class_weights", "type": "categorical", "values": ["none", "balanced"]},
]


# --- scikit-optimize with current numpy / scikit-learn ------------------------------
@pytest.mark.parametrize("estimator", ["GP", "RF", "ET", "GBRT"])
def test_skopt_runs_on_current_numpy(estimator):
    from skopt import Optimizer
    from skopt.space import Categorical, Integer, Real

    from stages.hpo.skopt_compat import patch_skopt

    patch_skopt()
    assert not hasattr(np, "in1d") or np.__version__ < "2.4"  # the patch must not touch numpy itself
    opt = Optimizer([Integer(1, 10), Real(1e-6, 1e-2, prior="log-uniform"), Categorical(["relu", "tanh"]),
                     Categorical([True, False])], base_estimator=estimator, n_initial_points=3,
                    acq_func="EI", random_state=0)
    for _ in range(3):
        xs = opt.ask(n_points=2)
        opt.tell(xs, [abs(x[0] - 4) + np.log10(x[1]) ** 2 / 10 + (x[2] == "tanh") for x in xs])
    result = opt.get_result()
    assert len(result.x_iters) == 6 and np.isfinite(result.fun)


# --- the search space -----------------------------------------------------------------
def test_decathlon_space_written_out_puts_its_defaults_first():
    """The decathlon space (meant for backbones) is what ``space`` lists when written out;
    left out, ``space`` is the shipped bnconv space."""
    from stages.families.classifier.core import ClassifierConfig
    from stages.hpo.config import classifier_space

    default = from_dict(HpoConfig, {}, "hpo.classifier")
    assert [d.name for d in default.space] == [d.name for d in classifier_space()]
    hpo = from_dict(HpoConfig, {"space": [to_dict(d) for d in decathlon_space()]}, "hpo.classifier")
    assert [d.name for d in hpo.space] == [d.name for d in decathlon_space()]
    names = {d.name for d in hpo.space}
    assert {"epochs", "head.size", "lr", "head.dropout", "phases.unfreeze", "head.layers",
            "head.activation", "class_weights"} == names
    cfg = from_dict(ClassifierConfig, {"arch": "mobilenet_v2"}, "train.classifier")
    first = default_point(hpo, cfg)
    assert first == [3, 256, 1e-3, 0.3, "last", 1, "relu", "none"]
    tuned = apply_overrides(cfg, dict(zip([d.name for d in hpo.space], first)), "x")
    assert tuned.head.activation == "relu" and tuned.phases.unfreeze == "last" and tuned.epochs == 3


@pytest.mark.parametrize("dim, key", [
    ({"name": "lr", "type": "real", "low": 0.1, "high": 0.01}, "hpo.space.0"),
    ({"name": "lr", "type": "real", "low": 0.0, "high": 0.1, "prior": "log-uniform"}, "hpo.space.0.low"),
    ({"name": "x", "type": "categorical", "values": []}, "hpo.space.0.values"),
    ({"name": "epochs", "type": "integer", "low": 1, "high": 5, "default": 9}, "hpo.space.0.default"),
])
def test_bad_dimensions_name_their_key(dim, key):
    with pytest.raises(ParamsError) as err:
        from_dict(HpoConfig, {"space": [dim]}, "hpo")
    assert err.value.path == key


def test_unknown_config_key_and_refused_value_fail_before_training():
    from stages.families.classifier.core import ClassifierConfig
    from stages.hpo.search import check_space

    cfg = ClassifierConfig()
    for dim, key in (({"name": "head.sise", "type": "integer", "low": 1, "high": 4}, "hpo.classifier.space.0.name"),
                     ({"name": "head.activation", "type": "categorical", "values": ["relu", "gelu"]},
                      "hpo.classifier.space.0")):
        with pytest.raises(ParamsError) as err:
            check_space(from_dict(HpoConfig, {"space": [dim]}, "hpo"), cfg, "classifier")
        assert err.value.path == key


# --- the search loop, with a cheap objective ---------------------------------------------
class Interrupted(Exception):
    pass


def quadratic(calls: list, stop_after: int | None = None):
    def evaluate(points):
        for i, p in enumerate(points):
            if stop_after is not None and len(calls) >= stop_after:
                raise Interrupted
            calls.append(p)
            yield i, {"val_accuracy": 1 - (np.log10(p["lr"]) + 3) ** 2 / 10, "val_loss": 0.1, "seconds": 0.0}
    return evaluate


def test_search_resumes_from_the_last_finished_call(tmp_path):
    hpo = from_dict(HpoConfig, {"n_calls": 7, "n_initial_points": 3, "space": SPACE}, "hpo")
    first = [0.003, 1, "none"]
    log = TrialLog(tmp_path / "log.json", "fp")
    calls: list = []
    with pytest.raises(Interrupted):
        run_search(hpo, first, log, quadratic(calls, stop_after=4), seed=0, progress=False)
    assert len(TrialLog(tmp_path / "log.json", "fp").trials) == 4
    assert calls[0] == {"lr": 0.003, "epochs": 1, "class_weights": "none"}  # the defaults first
    before = json.loads((tmp_path / "log.json").read_text())["trials"]
    again: list = []
    resumed = TrialLog(tmp_path / "log.json", "fp")
    trials = run_search(hpo, first, resumed, quadratic(again), seed=0, progress=False)
    assert resumed.resumed == 4 and len(again) == 3 and len(trials) == 7   # only the missing calls ran
    assert trials[:4] == before and [t["call"] for t in trials] == list(range(1, 8))
    assert sum(t["default"] for t in trials) == 1
    assert TrialLog(tmp_path / "log.json", "another-config").trials == []  # stale log ignored


# --- the stage ----------------------------------------------------------------------------
@pytest.fixture
def workdir(tmp_path, repo_params):
    manifest = shapes_dataset(tmp_path / "raw", per_class=24)
    data = copy.deepcopy(repo_params)
    data["base"]["image_size"] = 32
    data["families"] = ["classifier"]
    data["train"] = {"classifier": {"widths": [8, 16], "hidden": [16], "epochs": 1, "patience": 0,
                                    "batch_size": 16, "lr": 0.003, "use_hpo": True}}
    data["hpo"] = {"classifier": {"n_calls": 4, "n_initial_points": 2, "space": SPACE,
                                  "trial": {"widths": [8, 16], "hidden": [16], "epochs": 1, "patience": 0,
                                            "batch_size": 16, "lr": 0.003}}}
    write_params(tmp_path / "params.yaml", data)
    split.main(["--input", str(manifest), "--out", str(tmp_path / "split"), "--params", str(tmp_path / "params.yaml")])
    return tmp_path


HPO_CMD = [sys.executable, "-m", "stages.hpo.__main__", "classifier", "--train", "split/train.pt", "--val", "split/val.pt",
           "--out", "metrics/hpo", "--models", "models/hpo"]


def test_sigkill_then_rerun_continues_and_train_uses_best_params(workdir, monkeypatch, capsys):
    import stages.hpo.__main__ as hpo_stage

    log = workdir / ".kiln/resume/hpo-classifier.json"
    proc = subprocess.Popen(HPO_CMD, cwd=workdir, env=stage_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 150
    while time.time() < deadline and (not log.exists() or len(json.loads(log.read_text())["trials"]) < 2):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = json.loads(log.read_text())["trials"]
    assert 2 <= len(finished) < 4, "the kill should land mid-search"
    monkeypatch.chdir(workdir)  # the rerun and the training run in this process (no start-up cost)
    hpo_stage.main(HPO_CMD[3:])
    assert f"4 calls ({len(finished)} resumed)" in capsys.readouterr().out
    trials = json.loads(log.read_text())["trials"]
    assert trials[:len(finished)] == finished and len(trials) == 4
    metrics = json.loads((workdir / "metrics/hpo/classifier/metrics.json").read_text())["classifier"]["hpo"]
    best = json.loads((workdir / "models/hpo/classifier/best_params.json").read_text())
    assert metrics["n_calls"] == 4 and best["params"] == metrics["best_params"]
    assert max(t["val_accuracy"] for t in trials) == metrics["best"]
    rows = (workdir / "metrics/hpo/classifier/trials.csv").read_text().splitlines()
    assert rows[0].startswith("call,score,best_score") and len(rows) == 5
    assert (workdir / "metrics/hpo/classifier/convergence.png").read_bytes()[:4] == b"\x89PNG"

    params = json.loads(json.dumps(__import__("yaml").safe_load((workdir / "params.yaml").read_text())))
    params["train"]["classifier"]["use_hpo"] = True
    write_params(workdir / "params.yaml", params)
    train = subprocess.run([sys.executable, "-m", "stages.train.__main__", "classifier", "--train", "split/train.pt",
                            "--val", "split/val.pt", "--models", "models", "--metrics", "metrics/train",
                            "--input", "best_params=models/hpo/classifier/best_params.json"],
                           cwd=workdir, env=stage_env(), capture_output=True, text=True)
    assert train.returncode == 0, train.stderr
    config = torch.load(workdir / "models/classifier/model.pt", weights_only=True)["config"]
    assert {k: config[k] for k in best["params"]} == best["params"]


def test_bad_space_exits_2_with_the_key(workdir, monkeypatch, capsys):
    import yaml

    import stages.hpo.__main__ as hpo_stage
    from stages.common.errors import run_stage

    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["hpo"]["classifier"]["space"][0]["name"] = "learning_rate"
    write_params(workdir / "params.yaml", params)
    monkeypatch.chdir(workdir)
    with pytest.raises(SystemExit) as exit_:
        run_stage(hpo_stage.main, HPO_CMD[3:])
    assert exit_.value.code == 2
    assert "hpo.classifier.space.0.name" in capsys.readouterr().err


def test_fingerprint_ignores_what_every_trial_overrides(workdir):
    import yaml

    from stages.hpo.__main__ import search_fingerprint
    from stages.hpo.config import load_hpo_params
    from stages.hpo.trials import trial_config

    data = yaml.safe_load((workdir / "params.yaml").read_text())
    shards = [workdir / "split/train.pt", workdir / "split/val.pt"]

    def fp(train=None, **trial):
        changed = copy.deepcopy(data)
        changed["hpo"]["classifier"]["trial"].update(trial)
        changed["train"]["classifier"].update(train or {})
        params = load_hpo_params(write_params(workdir / "changed.yaml", changed), "classifier")
        return search_fingerprint(params, "classifier", params.hpo["classifier"],
                                  trial_config(params, "classifier"), shards)

    assert fp() == fp(lr=0.05)                                 # lr is searched with a default
    assert fp() == fp(train={"lr": 0.05, "epochs": 9, "use_hpo": False})  # train.* is not read
    assert fp() != fp(batch_size=8)                            # trials run with this


def test_search_reads_its_own_section_not_train(workdir, monkeypatch):
    """A bad train.classifier cannot reach the search; a bad hpo.classifier.trial is named."""
    import yaml

    import stages.hpo.__main__ as hpo_stage

    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["hpo"]["classifier"]["trial"]["widths"] = "wide"
    write_params(workdir / "params.yaml", params)
    monkeypatch.chdir(workdir)
    with pytest.raises(ParamsError) as info:
        hpo_stage.main(HPO_CMD[3:])
    assert info.value.path == "hpo.classifier.trial.widths"


def test_no_calls_passes_through(workdir, monkeypatch, capsys):
    import yaml

    import stages.hpo.__main__ as hpo_stage

    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["hpo"]["classifier"]["n_calls"] = 0
    write_params(workdir / "params.yaml", params)
    monkeypatch.chdir(workdir)
    hpo_stage.main(HPO_CMD[3:])
    assert "nothing to search" in capsys.readouterr().out
    best = json.loads((workdir / "models/hpo/classifier/best_params.json").read_text())
    assert best["params"] == {} and not (workdir / ".kiln/resume/hpo-classifier.json").exists()
