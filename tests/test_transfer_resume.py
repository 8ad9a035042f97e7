"""A fine-tuning run killed after the probe or an epoch resumes to exactly the uninterrupted
result, whether the kill lands after the probe, on a phase boundary (fresh optimizer) or inside
phase 2 (restored). The backbone reads the image store, as train@classifier does."""
from __future__ import annotations

import copy

import pytest
import torch

from stages.families.classifier import train as classifier
from stages.shared.shards import save_shard
from stages.train.__main__ import TrainContext, fingerprint
from tests.conftest import train_params
from tests.test_transfer import bar_store, bars

torch.set_num_threads(1)


class Killed(Exception):
    pass


def make_ctx(root, repo_params):
    data = copy.deepcopy(repo_params)
    for op in data["augment"]["online"].values():
        op["p"] = 0.0
    data["augment"]["online"]["hflip"]["p"] = 0.5     # the augmentation RNG must resume too
    data["base"]["image_size"] = 32
    data["train"]["classifier"] = {
        "arch": "resnet18", "input_size": 32, "epochs": 3, "batch_size": 16, "lr": 3e-3, "patience": 0,
        "head": {"layers": 1, "size": 16, "dropout": 0.2}, "use_hpo": False,
        "phases": {"probe_epochs": 5, "head_epochs": 1, "unfreeze": "last", "blocks": 1}}
    params = train_params(data, root)
    classes = params.base.classes
    save_shard(root / "train.pt", bars(8, 1, classes))   # bnconv's input: the stage still wants them
    save_shard(root / "val.pt", bars(8, 2, classes))
    bar_store(root / "full", "train", 48, 1, classes)
    bar_store(root / "full", "val", 32, 2, classes)
    cfg = params.train["classifier"]
    return TrainContext(params=params, family="classifier", cfg=cfg, train_shard=root / "train.pt",
                        val_shard=root / "val.pt", model_dir=root / "models", metrics_dir=root / "metrics",
                        resume_path=root / "resume.pt", device=torch.device("cpu"),
                        fingerprint=fingerprint(params, "classifier", cfg, [root / "train.pt", root / "val.pt"]),
                        extra_inputs={}, store_dir=root / "full")


def final_weights(ctx):
    return torch.load(ctx.checkpoint_path, weights_only=True)


@pytest.mark.parametrize("kill_after", [1, 2, 3])   # after the probe; at the phase boundary; inside phase 2
def test_killed_fine_tuning_resumes_to_the_same_model(tmp_path, repo_params, monkeypatch, kill_after):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    torch.manual_seed(0)
    whole = make_ctx(tmp_path / "a", repo_params)
    classifier.train(whole)
    expected = final_weights(whole)

    killed = make_ctx(tmp_path / "b", repo_params)
    real_save, saves = classifier.save_checkpoint, []

    def save_then_die(path, payload):
        real_save(path, payload)
        if path == killed.resume_path:
            saves.append(payload["epoch"])
            if len(saves) == kill_after:
                raise Killed
    monkeypatch.setattr(classifier, "save_checkpoint", save_then_die)
    torch.manual_seed(0)
    with pytest.raises(Killed):
        classifier.train(killed)
    monkeypatch.setattr(classifier, "save_checkpoint", real_save)
    torch.manual_seed(123)   # the resumed run must not depend on the global RNG at start
    classifier.train(killed)
    got = final_weights(killed)
    assert got["epoch"] == expected["epoch"]
    assert got["preprocess"]["crop"] == 32   # a backbone checkpoint records its eval view
    for key, value in expected["model"].items():
        assert torch.equal(value, got["model"][key]), key
    assert not killed.resume_path.exists()
