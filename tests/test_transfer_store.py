"""The transfer recipe on the image store: probe, trunk LR and frozen batch norm, checkpoint
choice, a backbone trained/evaluated/classified through the stages' own functions on a tiny
store, and the evaluation pass that keeps only the pictured images."""
from __future__ import annotations

import copy
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from stages.families.classifier.core.backbones import HeadConfig, TransferNet
from stages.families.classifier.core.config import ClassifierConfig
from stages.families.classifier.core.data import ShardSource, StoreSource
from stages.families.classifier.core.finetune import PhasesConfig, enter_phase
from stages.families.classifier.train.loop import fresh_state, record
from stages.families.classifier.train.probe import fit_head, head_score, pooled_features, run_probe
from stages.shared.shards import Shard, save_shard
from stages.shared.store import eval_image, open_store, write_store
from tests.conftest import load_repo_params, train_params
from tests.test_transfer import bars

torch.set_num_threads(1)
CLASSES = ["flat", "tall"]


# --- phases: trunk learning rate, frozen batch norm --------------------------------------------
def test_trunk_learns_slower_than_the_head_and_frozen_bn_keeps_its_statistics():
    torch.manual_seed(0)
    net = TransferNet("resnet18", 2, HeadConfig(size=8), input_size=32)
    cfg = PhasesConfig(probe_epochs=0, head_epochs=0, unfreeze="last", blocks=2, lr_factor=0.5,
                       trunk_lr_factor=0.1, bn="frozen")
    groups, _ = enter_phase(net, cfg, 0, 1e-2)
    assert [(g["name"], g["lr"]) for g in groups] == [("head", pytest.approx(5e-3)), ("trunk", pytest.approx(5e-4))]
    net.train()
    bns = [m for m in net.backbone.layer4.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns) and net.head.training
    stats = [m.running_mean.clone() for m in bns]
    weights = net.backbone.layer4[1].conv2.weight.clone()
    optimizer = torch.optim.SGD(groups)
    loss = torch.nn.functional.cross_entropy(net(torch.rand(8, 3, 32, 32)), torch.arange(8) % 2)
    loss.backward()
    optimizer.step()
    assert all(torch.equal(a, m.running_mean) for a, m in zip(stats, bns)), "frozen BN statistics moved"
    assert not torch.equal(weights, net.backbone.layer4[1].conv2.weight), "the unfrozen trunk must still train"
    enter_phase(net, PhasesConfig(probe_epochs=0, unfreeze="last", blocks=2, bn="train"), 0, 1e-2)
    net.train()
    assert all(m.training for m in bns)


# --- the probe ---------------------------------------------------------------------------------
def test_fit_head_solves_separable_features():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(200) % 2
    feats = torch.randn(200, 16, generator=g) + 3.0 * labels[:, None].float() * torch.linspace(-1, 1, 16)
    head = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.BatchNorm1d(8), torch.nn.SiLU(), torch.nn.Linear(8, 2))
    _, before = head_score(head, feats, labels)
    fit_head(head, feats, labels, epochs=20, lr=3e-3, weight_decay=0.0, generator=g)
    loss, acc = head_score(head, feats, labels)
    assert acc >= 0.97 and acc > before and loss < 0.5


def test_probe_trains_the_head_alone_and_reports_a_row():
    torch.manual_seed(0)
    net = TransferNet("mobilenet_v3_small", 2, HeadConfig(layers=0), input_size=32)
    trunk = {k: v.clone() for k, v in net.backbone.state_dict().items()}
    head = net.head[-1].weight.clone()
    train, val = ShardSource(bars(48, 1, CLASSES, 32)), ShardSource(bars(24, 2, CLASSES, 32))
    feats, labels = pooled_features(net, train.eval_batches(16), device=torch.device("cpu"))
    assert feats.shape == (48, 576) and torch.equal(labels, train.labels)
    cfg = ClassifierConfig(arch="mobilenet_v3_small", batch_size=16, precision="fp32", lr=3e-3, weight_decay=0.0,
                           phases=PhasesConfig(probe_epochs=5))
    row = run_probe(net, train, val, cfg, device=torch.device("cpu"), generator=torch.Generator().manual_seed(0))
    assert set(row) == {"train/loss", "train/accuracy", "val/loss", "val/accuracy", "lr", "images_per_second"}
    assert 0.0 <= row["val/accuracy"] <= 1.0 and math.isfinite(row["val/loss"])
    assert not torch.equal(head, net.head[-1].weight)
    assert all(torch.equal(v, net.backbone.state_dict()[k]) for k, v in trunk.items()), "the probe moved the trunk"


# --- which checkpoint is kept -------------------------------------------------------------------
def test_a_backbone_keeps_the_best_accuracy_loss_breaking_ties_bnconv_the_best_loss():
    rows = [(0.90, 0.30), (0.95, 0.40), (0.95, 0.20), (0.93, 0.10), (0.95, 0.25)]
    backbone, bnconv = fresh_state(), fresh_state()
    kept = {"backbone": [], "bnconv": []}
    for epoch, (acc, loss) in enumerate(rows):
        row = {"val/accuracy": acc, "val/loss": loss}
        kept["backbone"].append(record(SimpleNamespace(arch="resnet18"), backbone, row, epoch))
        kept["bnconv"].append(record(SimpleNamespace(arch="bnconv"), bnconv, row, epoch))
    assert kept["backbone"] == [True, True, True, False, False] and backbone["best_epoch"] == 2
    assert kept["bnconv"] == [True, False, True, True, False] and bnconv["best_epoch"] == 3
    assert backbone["bad_epochs"] == 2 and len(backbone["history"]) == 5


# --- a backbone through the stages, on a tiny store --------------------------------------------------
def photo(label: int, seed: int) -> Image.Image:
    """A bar (flat or tall) on noise, in a random non-square frame: the store keeps the aspect."""
    rng = np.random.default_rng(seed)
    w, h = (int(rng.integers(40, 64)), int(rng.integers(40, 64)))
    pixels = rng.integers(0, 60, (h, w, 3))
    if label == 0:
        y = int(rng.integers(5, h - 12))
        pixels[y:y + 6, 4:w - 4] = rng.integers(150, 256, 3)
    else:
        x = int(rng.integers(5, w - 12))
        pixels[4:h - 4, x:x + 6] = rng.integers(150, 256, 3)
    return Image.fromarray(pixels.astype(np.uint8))


def photo_store(root, name: str, n: int, seed: int) -> list[str]:
    paths, labels = [], []
    for i in range(n):
        paths.append(str(root / "photos" / name / f"{i:03d}.{'jpg' if i % 3 else 'png'}"))
        (root / "photos" / name).mkdir(parents=True, exist_ok=True)
        labels.append(i % 2)
        photo(i % 2, seed * 1000 + i).save(paths[-1])
    write_store(root / "full", name, paths, labels, CLASSES, [f"{seed:032x}{i:032x}" for i in range(n)],
                size=48, per_chunk=8)
    return paths


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """mobilenet_v3_small (random init, 32 px) trained by train@classifier's train(ctx) on a store."""
    from stages.families.classifier import train as classifier
    from stages.train.__main__ import TrainContext, fingerprint

    root = tmp_path_factory.mktemp("store")
    data = copy.deepcopy(load_repo_params())
    data["base"]["classes"] = CLASSES
    data["base"]["image_size"] = 32
    data["split"]["class_weights"] = "none"
    data["train"]["classifier"] = {
        "arch": "mobilenet_v3_small", "weights": None, "input_size": 32, "epochs": 2, "batch_size": 8,
        "lr": 3e-3, "patience": 0, "head": {"layers": 0}, "label_smoothing": 0.1, "precision": "fp32",
        "phases": {"probe_epochs": 3, "unfreeze": "last", "blocks": 2}}
    params = train_params(data, root)
    for name, n, seed in (("train", 24, 1), ("val", 10, 2), ("test", 12, 3)):
        photo_store(root, name, n, seed)
        save_shard(root / f"{name}.pt", bars(4, seed, CLASSES))   # 64-px shards: bnconv's, never read here
    cfg = params.train["classifier"]
    ctx = TrainContext(params=params, family="classifier", cfg=cfg, train_shard=root / "train.pt",
                       val_shard=root / "val.pt", model_dir=root / "models", metrics_dir=root / "metrics",
                       resume_path=root / "resume.pt", device=torch.device("cpu"),
                       fingerprint=fingerprint(params, "classifier", cfg, [root / "train.pt"]),
                       extra_inputs={}, store_dir=root / "full")
    ctx.model_dir.mkdir()
    torch.manual_seed(0)
    classifier.train(ctx)
    return root, ctx


def test_train_reads_the_store_logs_the_probe_first_and_records_the_preprocessing(trained):
    _, ctx = trained
    checkpoint = torch.load(ctx.checkpoint_path, weights_only=True)
    assert checkpoint["preprocess"]["crop"] == 32 and checkpoint["preprocess"]["resize"] == 37
    assert checkpoint["preprocess"]["mean"] == pytest.approx([0.485, 0.456, 0.406])
    steps = (ctx.metrics_dir / "plots/metrics/classifier/val/accuracy.tsv").read_text().splitlines()
    assert steps[0].startswith("step") and len(steps) == 1 + 3   # the probe, then two epochs
    assert not ctx.resume_path.exists()


def test_evaluate_scores_the_test_store(trained):
    from stages.evaluate.__main__ import EvalContext
    from stages.families.classifier.core.config import ClassifierEvalConfig
    from stages.families.classifier.evaluate import evaluate

    root, ctx = trained
    ectx = EvalContext(params=ctx.params, family="classifier", cfg=ClassifierEvalConfig(misclassified=4, heatmaps=4),
                       train_cfg=ctx.cfg, test_shard=root / "test.pt", model_dir=ctx.model_dir,
                       models_root=ctx.model_dir.parent, out_dir=root / "eval", device=torch.device("cpu"),
                       store_dir=root / "full")
    metrics = evaluate(ectx)
    assert metrics["images"] == 12   # the store's test split, not the 4-image shard
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert (root / "eval/plots/confusion.png").is_file() and (root / "eval/plots/heatmaps.png").is_file()
    assert len(json.loads((root / "eval/plots/confusion.json").read_text())) == 12


def test_classify_feeds_the_checkpoints_eval_view(trained):
    from stages.tools import classify as tool

    root, ctx = trained
    clf = tool.load_model(ctx.checkpoint_path)
    assert clf.crop == 32
    path = root / "photos/test/001.jpg"
    with Image.open(path) as img:
        expected = eval_image(img.convert("RGB"), 32)
    assert torch.equal(torch.from_numpy(tool.read_image(path, clf.size, crop=clf.crop)).permute(2, 0, 1), expected)
    with torch.no_grad():
        want = torch.softmax(clf.model(expected[None]), dim=1)[0]
    (label, p), *_ = tool.classify([path], ctx.checkpoint_path, topk=2)[0]
    assert label == CLASSES[int(want.argmax())] and p == pytest.approx(float(want.max()), abs=1e-5)


def test_a_bad_preprocess_record_is_refused(trained, tmp_path):
    from stages.common.errors import StageError
    from stages.tools import classify as tool

    _, ctx = trained
    checkpoint = torch.load(ctx.checkpoint_path, weights_only=True)
    checkpoint["preprocess"]["resize"] = 99
    torch.save(checkpoint, tmp_path / "odd.pt")
    with pytest.raises(StageError, match="unsupported 'preprocess' record"):
        tool.load_model(tmp_path / "odd.pt")


def test_train_without_a_store_says_which_file_is_missing(trained, tmp_path):
    from stages.common.errors import StageError
    from stages.families.classifier import train as classifier

    _, ctx = trained
    other = copy.copy(ctx)
    other.store_dir, other.resume_path = tmp_path / "nowhere", tmp_path / "resume.pt"
    other.model_dir, other.metrics_dir = tmp_path / "m", tmp_path / "metrics"
    with pytest.raises(StageError, match="nowhere/train.json not found"):
        classifier.train(other)


# --- evaluation keeps only what it pictures -----------------------------------------------------
def test_the_kept_images_give_the_grids_of_the_whole_split():
    from stages.families.classifier.evaluate.picks import Keeper
    from stages.families.classifier.evaluate.report import misclassified_grid

    g = torch.Generator().manual_seed(0)
    n = 60
    shard = Shard(torch.randint(0, 256, (n, 3, 8, 8), generator=g, dtype=torch.uint8),
                  torch.randint(0, 3, (n,), generator=g), ["a", "b", "c"])
    probs = torch.softmax(torch.randn(n, 3, generator=g) * 3, dim=1)
    keeper = Keeper(mistakes=5, heatmaps=6)
    for i in range(n):
        keeper.add(i, shard.images[i], int(shard.labels[i]), probs[i])
    picked, picked_probs = keeper.picked(shard.classes)
    assert len(picked) <= 5 + 3 + 6
    full = misclassified_grid(shard, probs, 5, 3)
    small = misclassified_grid(picked, picked_probs, 5, 3)
    assert np.array_equal(np.asarray(full), np.asarray(small))
    wrong = torch.nonzero(probs.argmax(1) != shard.labels).flatten()
    right = torch.nonzero(probs.argmax(1) == shard.labels).flatten()
    want = sorted(wrong[:3].tolist() + right[:6 - min(len(wrong), 3)].tolist())
    p_wrong = torch.nonzero(picked_probs.argmax(1) != picked.labels).flatten()
    p_right = torch.nonzero(picked_probs.argmax(1) == picked.labels).flatten()
    got = torch.cat([p_wrong[:3], p_right[:6 - min(len(p_wrong), 3)]])
    assert sorted(torch.stack([picked.images[i] for i in got]).flatten(1).sum(1).tolist()) == \
        sorted(shard.images[want].flatten(1).sum(1).tolist())


def test_store_source_batches_at_the_input_size(tmp_path):
    photo_store(tmp_path, "train", 10, 7)
    source = StoreSource(open_store(tmp_path / "full", "train"), 32, seed=1)
    train = list(source.train_batches(0, 4, torch.Generator()))
    assert [len(y) for _, y in train] == [4, 4]          # drop_last: no one-image batch-norm step
    assert all(x.shape[1:] == (3, 32, 32) and x.dtype == torch.uint8 for x, _ in train)
    again = list(source.train_batches(0, 4, torch.Generator()))
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(train, again)), "views must be a function of (seed, epoch)"
    evals = list(source.eval_batches(4))
    assert sum(len(y) for _, y in evals) == 10 and torch.equal(torch.cat([y for _, y in evals]), source.labels)


# --- real photos (../shared/data/catsdogs, absent on a user's machine) ---------------------------------
CATSDOGS = __import__("pathlib").Path(__file__).resolve().parents[2] / "shared/data/catsdogs"


@pytest.mark.skipif(not (CATSDOGS / "train").is_dir(), reason="needs ../shared/data/catsdogs")
def test_real_photos_store_view_matches_what_classify_feeds(tmp_path):
    """The store keeps a 256-px re-encode; classify decodes the original. Both cut the same
    centre square, so the 224-px views agree up to resampling and JPEG noise."""
    from stages.tools.classify import read_image

    paths = [sorted((CATSDOGS / "train" / c).iterdir())[i] for c in ("cats", "dogs") for i in range(3)]
    write_store(tmp_path, "val", [str(p) for p in paths], [0, 0, 0, 1, 1, 1], ["cats", "dogs"],
                [f"{i:064x}" for i in range(6)])
    (views, labels), = StoreSource(open_store(tmp_path, "val"), 224).eval_batches(8)
    assert views.shape == (6, 3, 224, 224) and labels.tolist() == [0, 0, 0, 1, 1, 1]
    for view, path in zip(views, paths):
        direct = torch.from_numpy(read_image(path, 64, crop=224)).permute(2, 0, 1)
        assert (view.float() - direct.float()).abs().mean() < 6.0, path
