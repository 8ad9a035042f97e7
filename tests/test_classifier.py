"""classifier family: learns, keeps the best checkpoint, survives kill -9 and resumes."""
from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import stages.split.__main__ as split
from stages.families.classifier.core import load_classifier
from stages.shared.shards import load_shard
from tests.conftest import stage_env, write_params
from tests.helpers import shapes_dataset


@pytest.fixture
def workdir(tmp_path, repo_params):
    manifest = shapes_dataset(tmp_path / "raw", per_class=80)
    data = copy.deepcopy(repo_params)
    data["base"]["image_size"] = 32
    data["families"] = ["classifier"]
    data["train"] = {"classifier": {"widths": [8, 16, 32], "hidden": [32], "epochs": 15, "patience": 0,
                                    "batch_size": 16, "lr": 0.003}}
    data["evaluate"] = {"classifier": {"misclassified": 8}}
    params = write_params(tmp_path / "params.yaml", data)
    split.main(["--input", str(manifest), "--out", str(tmp_path / "split"), "--params", str(params)])
    return tmp_path


def train_cmd(workdir):
    return [sys.executable, "-m", "stages.train.__main__", "classifier", "--train", "split/train.pt",
            "--val", "split/val.pt", "--models", "models", "--metrics", "metrics"]


def test_trains_and_evaluates(workdir):
    proc = subprocess.run(train_cmd(workdir), cwd=workdir, env=stage_env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    model, classes, preprocess = load_classifier(workdir / "models/classifier/model.pt")
    assert classes == ["bowl", "vase"]
    proc = subprocess.run([sys.executable, "-m", "stages.evaluate.__main__", "classifier", "--test", "split/test.pt",
                           "--models", "models", "--out", "eval"], cwd=workdir, env=stage_env(),
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    import json
    metrics = json.loads((workdir / "eval/classifier/metrics.json").read_text())["classifier"]
    assert metrics["accuracy"] >= 0.8
    assert (workdir / "eval/classifier/plots/confusion.png").is_file()
    assert not (workdir / ".kiln/resume/classifier.pt").exists()  # removed once finished


def test_kill_9_then_rerun_resumes(workdir):
    resume = workdir / ".kiln/resume/classifier.pt"
    proc = subprocess.Popen(train_cmd(workdir), cwd=workdir, env=stage_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not resume.exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert resume.exists(), "no epoch checkpoint before the kill"
    leftovers = [p.name for p in (workdir / ".kiln/resume").iterdir() if p.name.endswith(".tmp")]
    checkpoint = workdir / "models/classifier/model.pt"
    if checkpoint.exists():  # whatever is there is whole
        load_classifier(checkpoint)
    done = subprocess.run(train_cmd(workdir), cwd=workdir, env=stage_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "resuming after epoch" in done.stdout
    load_classifier(checkpoint)
    assert not resume.exists()
    assert len(leftovers) <= 1  # at most the temp file being written when killed


def test_changed_config_does_not_resume(workdir):
    resume = workdir / ".kiln/resume/classifier.pt"
    resume.parent.mkdir(parents=True)
    torch.save({"fingerprint": "someone-else"}, resume)
    done = subprocess.run(train_cmd(workdir), cwd=workdir, env=stage_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "resuming" not in done.stdout


def test_shard_with_other_classes_is_refused(workdir):
    shard = load_shard(workdir / "split/val.pt")
    shard.classes = ["cat", "dog"]
    from stages.shared.shards import save_shard
    save_shard(workdir / "split/val.pt", shard)
    proc = subprocess.run(train_cmd(workdir), cwd=workdir, env=stage_env(), capture_output=True, text=True)
    assert proc.returncode == 1
    assert "differ from base.classes" in proc.stderr and "Traceback" not in proc.stderr
