"""onnxruntime vs eager PyTorch for a classifier: latency at batch 1, throughput at batch B.

    PYTHONPATH=. python bench/export_speed.py [--model models/classifier/model.pt] [--arch bnconv]
        [--threads 2] [--batch 32] [--seconds 5]

Without ``--model`` the classifier is built from params.yaml's ``train.classifier`` (the
default: bnconv at base.image_size), random weights (the speed does not depend on them),
``--arch`` overriding the architecture (e.g. mobilenet_v2 at its 224 px). The model is exported
with ``kiln export`` into a temp folder, then both are timed on the same uint8 images, each
including its normalisation: eager is what kiln classify runs (``model(preprocess(uint8))``),
ONNX is what an export user runs (``preset.batch`` -> ``session.run``). Prints p50/p95 latency
at batch 1 and images/s at ``--batch``, and the max abs difference of the logits.

Measured 2026-12-03 on the 2-core dev machine while other jobs ran (load average 14-15, so
absolute figures are pessimistic; the ratios are the point), torch 2.14.1, onnxruntime 1.32:

    --threads 1                         batch 1 p50   batch 32 images/s   max |diff|
    bnconv 64 px (the default)  eager      0.92 ms          450            2e-8
                                onnx       0.19 ms         2231
    mobilenet_v2 224 px         eager     41.7 ms            14            2e-9
                                onnx      16.4 ms            54

With ``--threads 2`` on that loaded machine eager torch stalled (bnconv batch 1 p50 586 ms,
47 images/s at 32; onnxruntime 0.21 ms, 129 images/s): two intra-op threads fighting for two
busy cores; rerun on an idle machine before quoting 2-thread figures.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml


def build_checkpoint(arch: str | None, folder: Path) -> Path:
    """A checkpoint of params.yaml's classifier (arch overridden), random weights, saved as train saves it."""
    from stages.common.schema import from_dict, to_dict
    from stages.families.classifier.core import build_model
    from stages.families.classifier.core.config import ClassifierConfig
    from stages.families.classifier.core.data import eval_preprocess
    from stages.shared.checkpoint import save_checkpoint

    params = yaml.safe_load(Path("params.yaml").read_text())
    section = dict(params["train"]["classifier"])
    if arch:
        section.update(arch=arch, weights=None)
    cfg = from_dict(ClassifierConfig, section, "train.classifier")
    classes = list(params["base"]["classes"])
    model = build_model(cfg, len(classes)).eval()
    payload = {"family": "classifier", "model": model.state_dict(), "config": to_dict(cfg), "classes": classes,
               "epoch": 0, "image_size": params["base"]["image_size"]}
    if cfg.arch != "bnconv":
        payload["preprocess"] = eval_preprocess(model)
    save_checkpoint(folder / "model.pt", payload)
    return folder / "model.pt"


def timed(run, seconds: float) -> list[float]:
    """Per-call wall times (s) of ``run()`` over about ``seconds``, after 3 warm-up calls."""
    for _ in range(3):
        run()
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 10:
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return times


def report(name: str, one: list[float], many: list[float], batch: int) -> None:
    p50, p95 = statistics.median(one) * 1e3, float(np.percentile(one, 95)) * 1e3
    print(f"{name:<12} batch 1: p50 {p50:7.2f} ms  p95 {p95:7.2f} ms   batch {batch}: "
          f"{batch / statistics.median(many):8.0f} images/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--arch", help="override params.yaml's train.classifier.arch (no --model)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import onnxruntime as ort

    from stages.tools import classify, export

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.model or build_checkpoint(args.arch, Path(tmp))
        export.export(checkpoint, Path(tmp) / "model.onnx", "onnx")
        clf = classify.load_model(checkpoint)
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = args.threads, 1
        session = ort.InferenceSession(str(Path(tmp) / "model.onnx"), options, providers=["CPUExecutionProvider"])
        side = clf.preset.crop
        rng = np.random.default_rng(0)
        pixels = [rng.integers(0, 256, (side, side, 3), dtype=np.uint8) for _ in range(args.batch)]
        uint8 = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).contiguous()

        def eager(n):
            with torch.no_grad():
                return clf.model(clf.preprocess(uint8[:n])).numpy()

        def onnx(n):
            return session.run(None, {"image": clf.preset.batch(pixels[:n]).numpy()})[0]

        diff = float(np.abs(eager(args.batch) - onnx(args.batch)).max())
        print(f"{clf.preset.view} {side}px, {type(clf.model).__name__} "
              f"{getattr(clf.model, 'arch', 'bnconv')}, {args.threads} threads, torch {torch.__version__}, "
              f"onnxruntime {ort.__version__}, load average {os.getloadavg()[0]:.1f}; max |diff| {diff:.2e}")
        for name, run in (("eager torch", eager), ("onnxruntime", onnx)):
            one = timed(lambda run=run: run(1), args.seconds)
            report(name, one, timed(lambda run=run: run(args.batch), args.seconds), args.batch)


if __name__ == "__main__":
    main()
