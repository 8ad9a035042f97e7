"""Real photos, MobileNetV2 ImageNet: the PyTorch transfer-learning tutorial against kiln's recipe.

    python bench/real_transfer.py DIR [--epochs 5] [--kiln-epochs N] [--set KEY=VALUE ...]

DIR holds ``train/<class>/*`` and ``val/<class>/*`` (e.g. ../shared/data/catsdogs). Runs back
to back, on the same machine, data and thread count (torch.set_num_threads(cores)):

  peer  the tutorial "Transfer learning for computer vision" (finetuning the ConvNet), on
        MobileNetV2: ImageFolder; train RandomResizedCrop(224) + RandomHorizontalFlip +
        ToTensor + Normalize, val Resize(256) + CenterCrop(224); a new last layer; all
        weights trained; SGD lr 1e-3 momentum 0.9, StepLR(7, 0.1), batch 32, ``--epochs``
        epochs, shuffled DataLoader; the best val accuracy kept. fp32, as the tutorial.
  kiln  train@classifier's own functions: the image store written from DIR (write_store),
        StoreSource views at the model's input size, ``fit`` with params.yaml's
        train.classifier (arch mobilenet_v2, weights IMAGENET1K_V1, ``--set`` overrides):
        the probe (head-only) row, then the fine-tuned epochs.

Data setup is included for both: the peer's clock starts before its ImageFolders are built,
kiln's before its store is written. Prints per epoch/phase the val accuracy and cumulative
wall seconds, then the ratios. ``--peer-json FILE`` reuses (or saves) a peer run.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


# --- the tutorial's recipe ---------------------------------------------------------------
def _tutorial_loaders(root: Path, workers: int):
    from torchvision import datasets, transforms

    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    data_transforms = {
        "train": transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(),
                                     transforms.ToTensor(), transforms.Normalize(mean, std)]),
        "val": transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224),
                                   transforms.ToTensor(), transforms.Normalize(mean, std)]),
    }
    sets = {x: datasets.ImageFolder(root / x, data_transforms[x]) for x in ("train", "val")}
    loaders = {x: torch.utils.data.DataLoader(sets[x], batch_size=32, shuffle=True, num_workers=workers)
               for x in ("train", "val")}
    return sets, loaders


def _tutorial_epoch(model, loader, optimizer, criterion, train: bool) -> float:
    model.train(train)
    corrects = seen = 0
    for inputs, labels in loader:
        optimizer.zero_grad()
        with torch.set_grad_enabled(train):
            outputs = model(inputs)
            loss = criterion(outputs, labels)
            if train:
                loss.backward()
                optimizer.step()
        corrects += (outputs.argmax(1) == labels).sum().item()
        seen += len(labels)
    return corrects / max(seen, 1)


def run_peer(root: Path, epochs: int, workers: int) -> dict:
    from torch import nn
    from torchvision import models

    start = time.perf_counter()
    sets, loaders = _tutorial_loaders(root, workers)
    model = models.mobilenet_v2(weights="IMAGENET1K_V1")
    model.classifier[1] = nn.Linear(model.last_channel, len(sets["train"].classes))
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.1)
    rows, best = [], 0.0
    for epoch in range(epochs):
        _tutorial_epoch(model, loaders["train"], optimizer, criterion, True)
        scheduler.step()
        acc = _tutorial_epoch(model, loaders["val"], optimizer, criterion, False)
        best = max(best, acc)   # the tutorial keeps a copy of the best weights
        rows.append({"step": f"epoch {epoch + 1}", "val_accuracy": acc, "seconds": time.perf_counter() - start})
        print(f"peer  epoch {epoch + 1}: val acc {acc:.4f}  {rows[-1]['seconds']:7.1f}s", flush=True)
    return {"rows": rows, "best": best}


# --- kiln's recipe -------------------------------------------------------------------------
def _files(root: Path, classes: list[str]) -> tuple[list[str], list[int]]:
    paths, labels = [], []
    for label, name in enumerate(classes):
        found = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        paths += [str(p) for p in found]
        labels += [label] * len(found)
    return paths, labels


def write_stores(root: Path, out: Path, threads: int) -> list[str]:
    """train and val stores from DIR's folders, as the split stage writes data/split/full."""
    from stages.shared.store import write_store

    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    for name in ("train", "val"):
        paths, labels = _files(root / name, classes)
        write_store(out, name, paths, labels, classes, [f"{i:064x}" for i in range(len(paths))], threads=threads)
    return classes


def kiln_params(work: Path, overrides: dict):
    """train@classifier's params: params.yaml with a MobileNetV2 ImageNet backbone and ``overrides``."""
    from stages.families import load_family_params
    from stages.shared.overrides import apply_overrides
    from stages.shared.training import TRAIN_SECTIONS

    data = copy.deepcopy(yaml.safe_load(Path("params.yaml").read_text()))
    data["train"]["classifier"].update(arch="mobilenet_v2", weights="IMAGENET1K_V1", use_hpo=False)
    work.mkdir(parents=True, exist_ok=True)
    (work / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    params = load_family_params(work / "params.yaml", "classifier", ("train",), TRAIN_SECTIONS)
    cfg = apply_overrides(params.train["classifier"], overrides, "--set")
    return params, cfg


def run_kiln(root: Path, work: Path, overrides: dict, threads: int) -> dict:
    from stages.families.classifier.core import initial_model
    from stages.families.classifier.core.data import StoreSource
    from stages.families.classifier.train import fit, fresh_state
    from stages.shared.store import open_store

    params, cfg = kiln_params(work, overrides)
    start = time.perf_counter()
    classes = write_stores(root, work / "full", threads)
    print(f"kiln  store written: {time.perf_counter() - start:7.1f}s", flush=True)
    torch.manual_seed(params.base.seed)
    model, note = initial_model(cfg, classes)
    model = model.to(memory_format=torch.channels_last)
    train, val = (StoreSource(open_store(work / "full", name), model.input_size, seed=params.base.seed,
                              workers=threads) for name in ("train", "val"))
    rows = []

    def on_epoch(epoch, row, improved, optimizer, schedule):
        step = "probe (head only)" if epoch < 0 else f"epoch {epoch + 1}"
        rows.append({"step": step, "val_accuracy": row["val/accuracy"], "val_loss": row["val/loss"],
                     "seconds": time.perf_counter() - start})
        print(f"kiln  {step}: val acc {row['val/accuracy']:.4f} loss {row['val/loss']:.4f}  "
              f"{rows[-1]['seconds']:7.1f}s", flush=True)

    state = fit(cfg, model, train, val, params=params, device=torch.device("cpu"),
                generator=torch.Generator().manual_seed(params.base.seed), state=fresh_state(), on_epoch=on_epoch)
    return {"rows": rows, "best": state["best_val_accuracy"], "best_step": state["best_epoch"], "note": note,
            "precision": cfg.precision, "overrides": overrides}


# --- the report ----------------------------------------------------------------------------
def first_reaching(rows: list[dict], target: float) -> dict | None:
    return next((r for r in rows if r["val_accuracy"] >= target), None)


def report(peer: dict, kiln: dict) -> None:
    peer_total = peer["rows"][-1]["seconds"]
    peer_best_at = first_reaching(peer["rows"], peer["best"])["seconds"]
    print("\nrecipe  step                  val acc   wall s (cumulative)")
    for who, run in (("peer", peer), ("kiln", kiln)):
        for r in run["rows"]:
            print(f"{who:<7} {r['step']:<21} {r['val_accuracy']:.4f}  {r['seconds']:8.1f}")
    hit = first_reaching(kiln["rows"], peer["best"])
    print(f"\npeer: best val acc {peer['best']:.4f} (reached at {peer_best_at:.1f}s), total {peer_total:.1f}s")
    tuned = max((r["val_accuracy"] for r in kiln["rows"][1:]), default=float("nan"))
    kept = "the probe" if kiln["best_step"] == 0 else f"epoch {kiln['best_step']}"
    print(f"kiln: head-only (probe) {kiln['rows'][0]['val_accuracy']:.4f}; fine-tuned epochs best {tuned:.4f}, "
          f"last {kiln['rows'][-1]['val_accuracy']:.4f}; kept {kept} ({kiln['best']:.4f}); "
          f"total {kiln['rows'][-1]['seconds']:.1f}s (precision {kiln['precision']})")
    if hit is None:
        print("kiln never reached the peer's best val accuracy")
    else:
        print(f"kiln reached the peer's best ({peer['best']:.4f}) at {hit['step']}, {hit['seconds']:.1f}s: "
              f"{hit['seconds'] / peer_total:.2f}x the peer's total, {hit['seconds'] / peer_best_at:.2f}x its time to best")
    print(f"final (kept) val acc: kiln {kiln['best']:.4f} vs peer {peer['best']:.4f} "
          f"({'>=' if kiln['best'] >= peer['best'] else '<'})")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path, help="a folder with train/<class>/ and val/<class>/")
    parser.add_argument("--epochs", type=int, default=5, help="the peer's epochs (the tutorial's 25 cut to 5)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a train.classifier key for kiln (YAML value), e.g. epochs=5")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "kiln-bench-real-transfer")
    parser.add_argument("--peer-json", type=Path, help="reuse this peer run if it exists, else save it there")
    parser.add_argument("--workers", type=int, default=0, help="peer DataLoader workers (0: the core count)")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    for part in ("train", "val"):
        if not (args.dir / part).is_dir():
            sys.exit(f"{args.dir / part}: not a folder (DIR needs train/<class>/ and val/<class>/)")
    cores = os.cpu_count() or 1
    torch.set_num_threads(cores)
    from stages.families.classifier.core.backbones import _fetch_enum_weights
    _fetch_enum_weights("mobilenet_v2", "IMAGENET1K_V1", "bench")   # the offline file, outside both clocks
    overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    print(f"{args.dir}: {cores} cores, load average {os.getloadavg()[0]:.1f}; torch threads {cores}")
    if args.peer_json and args.peer_json.is_file():
        peer = json.loads(args.peer_json.read_text())
        print(f"peer: reusing {args.peer_json}")
    else:
        peer = run_peer(args.dir, args.epochs, args.workers or cores)
        if args.peer_json:
            args.peer_json.write_text(json.dumps(peer, indent=1))
    kiln = run_kiln(args.dir, args.work, overrides, cores)
    report(peer, kiln)


if __name__ == "__main__":
    main()
