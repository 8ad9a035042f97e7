"""Classify image files with a trained classifier: python -m stages.tools.classify --model M.pt FILE...

Labels come from the checkpoint's ``classes`` (the order the model was trained with),
never from a directory listing: the decathlon API read them from an unsorted walk of
the training folders and could mislabel every prediction. Images are decoded and
letterboxed exactly as the split stage did for training (``shards.load_rgb`` at the
checkpoint's ``image_size``). Prints one JSON object per file, the decathlon API's shape:
``{"path", "success", "predictions": [{"label", "probability"}, ...]}``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from stages.common.errors import StageError, run_stage
from stages.families.classifier.core import load_classifier
from stages.shared.checkpoint import load_checkpoint
from stages.shared.images import load_rgb


def load_images(paths: list[Path], size: int) -> torch.Tensor:
    """uint8 (N, 3, size, size), each file decoded and letterboxed like the training shards."""

    arrays = []
    for path in paths:
        try:
            arrays.append(load_rgb(path, size))        # (size, size, 3) uint8
        except FileNotFoundError:
            raise StageError(f"{path}: no such image file") from None
        except OSError as err:  # PIL's UnidentifiedImageError and truncated files are OSErrors
            raise StageError(f"{path}: not a readable image ({err.__class__.__name__})") from None
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


@torch.no_grad()
def classify(paths: list[str | Path], checkpoint: str | Path, *, topk: int = 3, device: str = "cpu",
             batch_size: int = 64) -> list[list[tuple[str, float]]]:
    """Top-k (label, probability) per image, labels in the checkpoint's training order."""

    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise StageError(f"{checkpoint}: no trained classifier (run train@classifier first)")
    size = int(load_checkpoint(checkpoint).get("image_size", 64))
    model, classes, preprocess = load_classifier(checkpoint, device)
    paths = [Path(p) for p in paths]
    results = []
    for start in range(0, len(paths), batch_size):
        images = load_images(paths[start:start + batch_size], size).to(device)
        probs = F.softmax(model(preprocess(images)), dim=1).cpu()           # (B, C)
        top = probs.topk(min(topk, len(classes)), dim=1)
        for values, indices in zip(top.values.tolist(), top.indices.tolist()):
            results.append([(classes[i], p) for i, p in zip(indices, values)])
    return results


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="kiln classify", description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--model", type=Path, default=Path("models/classifier/model.pt"))
    parser.add_argument("--topk", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    for path, top in zip(args.files, classify(args.files, args.model, topk=args.topk, device=args.device)):
        predictions = [{"label": label, "probability": round(p, 6)} for label, p in top]
        print(json.dumps({"path": str(path), "success": True, "predictions": predictions}))


if __name__ == "__main__":
    run_stage(main)
