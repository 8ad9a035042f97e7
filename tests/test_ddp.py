"""Data-parallel training: ``train.classifier.nproc: 2`` runs train@classifier through torchrun
(gloo, 2 CPU processes) inside a temporary git + DVC repo on the rendered demo, and gets the
single-process model's val accuracy, one checkpoint and one log; a SIGKILLed rank and a rerun
resume. The rank-sharding of the data order is tested without processes."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import torch
import yaml

from tests.conftest import copy_pipeline, stage_env
from tests.test_e2e import ran_stages, run, tiny_params

EPOCHS = 30
TRAIN_CMD = ["python", "-m", "stages.train", "classifier", "--train", "data/augmented/train.pt",
             "--val", "data/split/val.pt", "--store", "data/split/full"]


def ddp_params() -> dict:
    """The e2e tiny params, classifier only, with enough demo images and epochs that both runs
    converge (the comparison is of trained models, not of noise)."""
    data = tiny_params()
    data["families"] = ["classifier"]
    for section in ("train", "evaluate", "hpo"):
        data[section] = {"classifier": data[section]["classifier"]}
    data["demo"]["n_per_class"] = 150
    data["augment"]["per_class"] = 400
    data["hpo"]["classifier"]["n_calls"] = 0
    data["train"]["classifier"].update(widths=[16, 32, 64], hidden=[64], epochs=EPOCHS, batch_size=32)
    return data


def make_project(root: Path, data: dict) -> Path:
    """A git + DVC repo of kiln's stages on ``data``, the chain run once and committed."""
    copy_pipeline(root)
    (root / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    (root / ".gitignore").write_text("/.kiln/\n__pycache__/\n")
    for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "test@kiln"],
                ["git", "config", "user.name", "kiln test"], ["dvc", "init", "-q"],
                ["dvc", "config", "core.analytics", "false"], ["git", "add", "-A"],
                ["git", "commit", "-qm", "tiny kiln project"], ["dvc", "repro"],
                ["git", "add", "-A"], ["git", "commit", "-qm", "first repro"]):
        run(cmd, root)
    return root


def val_accuracy(checkpoint: Path, val_shard: Path) -> float:
    """The checkpoint's accuracy on the val shard, computed here from the saved weights."""
    from stages.families.classifier.core import load_classifier
    from stages.families.classifier.core.fit import predict, score
    from stages.shared.shards import load_shard

    model, _, preprocess = load_classifier(checkpoint)
    val = load_shard(val_shard)
    return score(predict(model, val, preprocess=preprocess, batch_size=256, device=torch.device("cpu")),
                 val.labels)[1]


def plot_rows(project: Path, name: str = "val/accuracy") -> int:
    """Data rows dvclive wrote for one metric (one per logged step: no rank logged twice)."""
    [tsv] = (project / "metrics/train/classifier/plots/metrics").rglob(f"{name}.tsv")   # maybe under the family
    return len(tsv.read_text().splitlines()) - 1


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = make_project(tmp_path_factory.mktemp("kiln-ddp"), ddp_params())
    (root / "single.acc").write_text(str(val_accuracy(root / "models/classifier/model.pt", root / "data/split/val.pt")))
    return root


# --- the data order, split over ranks --------------------------------------------------
def test_ranks_split_each_batch_of_the_seeded_order():
    from stages.shared.shards import Shard, iterate_batches

    n, batch, world = 103, 8, 2
    shard = Shard(torch.zeros((n, 3, 2, 2), dtype=torch.uint8), torch.arange(n), ["a"])
    whole = [labels for _, labels, _ in iterate_batches(shard, batch, shuffle=True, drop_last=True,
                                                        generator=torch.Generator().manual_seed(3))]
    ranks = [[labels for _, labels, _ in iterate_batches(shard, batch // world, shuffle=True, drop_last=True, rank=r,
                                                         world=world, generator=torch.Generator().manual_seed(3))]
             for r in range(world)]
    assert len(ranks[0]) == len(ranks[1]) == len(whole) == n // batch   # lockstep
    for k, (a, b) in enumerate(zip(*ranks)):                   # together: the one-process batch
        assert sorted(torch.cat([a, b]).tolist()) == sorted(whole[k].tolist())
    evaluated = [labels for r in range(world) for _, labels, _ in
                 iterate_batches(shard, batch, shuffle=False, rank=r, world=world)]
    assert sorted(torch.cat(evaluated).tolist()) == list(range(n))   # eval: every image once


def test_nproc_must_divide_the_batch(tmp_path):
    from stages.common.schema import ParamsError
    from stages.families.classifier.core.config import ClassifierConfig

    with pytest.raises(ParamsError, match="nproc"):
        ClassifierConfig(batch_size=32, nproc=3).validate("train.classifier")


# --- through DVC -------------------------------------------------------------------------
e2e = pytest.mark.e2e


@e2e
def test_two_processes_train_the_single_process_model(project):
    proc = run(["dvc", "exp", "run", "-S", "train.classifier.nproc=2", "-n", "ddp2"], project)
    ran = ran_stages(proc.stdout)
    assert {"train@classifier", "evaluate@classifier"} <= ran and not {"crawl", "filter", "split", "augment"} & ran
    assert "torch.distributed.run --standalone --nproc-per-node=2" in proc.stdout
    assert proc.stdout.count("epoch 1/") == 1 and "2 processes (DDP)" in proc.stdout   # rank 0 alone prints
    single = float((project / "single.acc").read_text())
    ddp = val_accuracy(project / "models/classifier/model.pt", project / "data/split/val.pt")
    assert abs(ddp - single) <= 0.02, (ddp, single)
    assert sorted(p.name for p in (project / "models/classifier").iterdir()) == ["model.pt"]
    assert not (project / ".kiln/staging/classifier").exists() and not (project / ".kiln/resume/classifier.pt").exists()
    assert plot_rows(project) == EPOCHS and plot_rows(project, "train/loss") == EPOCHS
    assert yaml.safe_load((project / "metrics/train/classifier/metrics.json").read_text())["step"] == EPOCHS - 1


def _rank_process(root: psutil.Process, rank: str) -> psutil.Process | None:
    for child in root.children(recursive=True):
        try:
            if child.environ().get("RANK") == rank and "stages.train" in " ".join(child.cmdline()):
                return child
        except psutil.Error:
            continue
    return None


@e2e
def test_sigkill_of_one_rank_then_rerun_resumes(project):
    data = yaml.safe_load((project / "params.yaml").read_text())
    data["train"]["classifier"].update(nproc=2, epochs=3 * EPOCHS)   # long enough to be killed mid-way
    (project / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    resume, model = project / ".kiln/resume/classifier.pt", project / "models/classifier/model.pt"
    proc = subprocess.Popen(["dvc", "repro", "train@classifier"], cwd=project, env=stage_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 300
        while not resume.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert resume.exists(), "training never wrote an epoch checkpoint"
        rank1 = _rank_process(psutil.Process(proc.pid), "1")
        assert rank1 is not None, "no rank-1 worker found"
        rank1.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=120) != 0      # torchrun ends rank 0 and the stage fails
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert resume.exists() and not model.exists()   # DVC removed the old output; nothing half-written
    done = run(["dvc", "repro", "train@classifier"], project)
    assert "resuming after epoch" in done.stdout
    assert not resume.exists() and model.is_file()
    assert plot_rows(project) == 3 * EPOCHS         # the killed epochs replayed once, no rank twice
    assert run(["dvc", "status", "train@classifier"], project).stdout.strip().endswith("up to date.")


@e2e
def test_transfer_with_probe_runs_on_two_processes(project, tmp_path):
    """mobilenet_v2 on the image store: each rank encodes its share for the probe, rank 0 fits
    the head and broadcasts it; the result matches one process's."""
    accuracies = {}
    for nproc in (1, 2):
        data = ddp_params()
        data["train"]["classifier"].update(arch="mobilenet_v2", weights="IMAGENET1K_V1", input_size=64,
                                           epochs=1, nproc=nproc)
        data["train"]["classifier"]["phases"] = {"probe_epochs": 20}
        params = tmp_path / f"params{nproc}.yaml"
        params.write_text(yaml.safe_dump(data, sort_keys=False))
        out = tmp_path / f"n{nproc}"
        proc = run([*TRAIN_CMD, "--params", str(params), "--models", str(out / "models"),
                    "--metrics", str(out / "metrics")], project)
        assert proc.stdout.count("probe (") == 1
        checkpoint = torch.load(out / "models/classifier/model.pt", weights_only=True)
        assert checkpoint["preprocess"]["crop"] == 64
        accuracies[nproc] = checkpoint["val_accuracy"]
    assert abs(accuracies[2] - accuracies[1]) <= 0.02, accuracies
