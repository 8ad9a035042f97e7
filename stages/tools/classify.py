"""Classify image files with a trained classifier: python -m stages.tools.classify --model M.pt FILE|DIR...

Labels come from the checkpoint's ``classes`` (the order the model was trained with),
never from a directory listing: the decathlon API read them from an unsorted walk of
the training folders and could mislabel every prediction. Images are prepared by the
checkpoint's preset (stages/families/classifier/core/preset.py), the one evaluate@classifier,
serve and export use: a checkpoint that records ``preprocess`` (a backbone, trained on the
image store) gets the store's eval view (EXIF orientation applied, shorter side resized to
``resize``, centre crop ``crop``; the model normalises itself); one without (bnconv) gets
the split stage's letterbox (``images.load_rgb`` at the checkpoint's ``image_size``).

Plain files (or a folder of them): one JSON object per file on stdout, the decathlon
API's shape ``{"path", "success", "predictions": [{"label", "probability"}, ...]}``.

A labelled folder (``DIR/<class>/*.jpg``, torchvision's ImageFolder layout; every
sub-folder must be named after one of the model's classes, else exit 2 naming it):
overall accuracy and a per-class table (precision, recall, F1, images, predicted,
correct) on stdout. ``--out FILE`` writes one JSON line per classified image:
``{"path", "class" (true, null when unlabelled), "predicted", "correct", "topk": [{"label",
"probability"}]}``.

A file that cannot be classified (missing, corrupt, or over ``--max-pixels``, checked from
the header before decoding) gets one ``kiln: error:`` line on stderr; the others are still
classified and written, and the exit status is 1 at the end.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from stages.common.errors import StageError, run_stage
from stages.common.io import write_jsonl
from stages.common.schema import ParamsError, from_dict
from stages.families.classifier.core.config import ClassifierConfig
from stages.families.classifier.core.preset import (
    MAX_PIXELS,
    ImageSource,
    Preset,
    classifier_from_checkpoint,
    decode_view,
)
from stages.families.classifier.evaluate.report import classification_metrics
from stages.shared.checkpoint import load_checkpoint

# What a folder walk counts as an image (other files, e.g. notes or .DS_Store, are not scored).
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
# First bytes of files people pass as --model by mistake, for a clearer refusal.
MAGIC = {b"\xff\xd8\xff": "a JPEG image", b"\x89PNG": "a PNG image", b"GIF8": "a GIF image",
         b"RIFF": "a RIFF (WebP?) file", b"%PDF": "a PDF", b"{": "a JSON/text file"}


class UsageError(StageError):
    """The command line names the wrong thing (a class folder the model does not know): exit 2."""


# --- the model ---------------------------------------------------------------------
@dataclass
class Classifier:
    model: torch.nn.Module
    classes: list[str]
    preprocess: object
    size: int            # the square the training shards were letterboxed to
    device: str
    crop: int = 0        # > 0: the eval view at this size (checkpoint "preprocess"), not the letterbox
    preset: Preset | None = None   # how a file becomes the model's input (core/preset.py)

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, S, S) -> softmax probabilities (B, C) on the CPU."""
        return F.softmax(self.model(self.preprocess(images.to(self.device))), dim=1).float().cpu()


def describe_file(path: Path) -> str:
    """What a file that torch.load refused looks like, from its first bytes (export uses it too)."""
    with open(path, "rb") as fh:
        head = fh.read(8)
    if not head:
        return "an empty file"
    for magic, what in MAGIC.items():
        if head.startswith(magic):
            return what
    return "not a PyTorch file" if not head.startswith(b"PK") else "an unreadable PyTorch file"


def load_model(path: str | Path, device: str = "cpu") -> Classifier:
    """A kiln classifier checkpoint, or a one-line StageError saying what the file is instead."""
    path = Path(path)
    checkpoint = read_classifier_checkpoint(path)
    try:
        model, classes, preprocess, preset = classifier_from_checkpoint(checkpoint, path, device)
    except StageError:            # a RuntimeError too: already one line
        raise
    except RuntimeError as err:   # state dict and config disagree
        first = str(err).strip().splitlines()[0]
        raise StageError(f"{path}: damaged classifier checkpoint (weights do not fit its config: {first})") from None
    crop = preset.crop if preset.view == "centre_crop" else 0
    return Classifier(model, classes, preprocess, int(checkpoint.get("image_size", 64)), device, crop, preset)


def read_classifier_checkpoint(path: Path, tool: str = "kiln classify") -> dict:
    """The checkpoint dict of a kiln classifier (export and serve read it too), or a one-line
    StageError saying what the file is instead: missing, not a checkpoint, another family."""
    if not path.is_file():
        raise StageError(f"{path}: no trained classifier (run train@classifier first)")
    try:
        checkpoint = load_checkpoint(path)
    except ValueError as err:
        cause = err.__cause__.__class__.__name__ if err.__cause__ else "ValueError"
        raise StageError(f"{path}: not a kiln checkpoint ({describe_file(path)}; torch.load: {cause}); "
                         "--model takes train@classifier's models/classifier/model.pt") from None
    if not isinstance(checkpoint, dict):
        raise StageError(f"{path}: not a kiln checkpoint (holds a {type(checkpoint).__name__}, not a "
                         "checkpoint dict); --model takes train@classifier's models/classifier/model.pt")
    family = checkpoint.get("family")
    if family is not None and family != "classifier":
        raise StageError(f"{path}: a {family} checkpoint; {tool} needs a classifier checkpoint "
                         "(train@classifier writes models/classifier/model.pt)")
    missing = [k for k in ("model", "config", "classes") if k not in checkpoint]
    if missing:
        raise StageError(f"{path}: not a classifier checkpoint (no {', '.join(missing)}; keys: "
                         f"{', '.join(map(str, sorted(checkpoint)))}); {tool} needs one from train@classifier")
    try:   # a checkpoint without "family" (older kiln) must at least hold a classifier's config
        from_dict(ClassifierConfig, checkpoint["config"], "config")
    except ParamsError as err:
        raise StageError(f"{path}: not a classifier checkpoint ({err.path}: {err.message.split(';')[0]}); "
                         f"a checkpoint of another family? {tool} needs one from train@classifier") from None
    classes = checkpoint["classes"]
    if not isinstance(classes, (list, tuple)) or not all(isinstance(c, str) for c in classes) or not classes:
        raise StageError(f"{path}: not a classifier checkpoint ('classes' is not a list of names)")
    return checkpoint


# --- the images --------------------------------------------------------------------
def read_image(source: ImageSource, size: int, max_pixels: int = MAX_PIXELS, crop: int = 0,
               name: str | None = None) -> np.ndarray:
    """(size, size, 3) uint8, the letterbox (``load_rgb``), or with ``crop`` the eval view
    (crop, crop, 3): the preset's decode (core/preset.py) of a path, bytes or a binary file
    object. A header claiming more than ``max_pixels`` is refused before any pixel is decoded.
    Failures: a one-line StageError starting with ``name`` (default: the path, or "image")."""
    return decode_view(source, "centre_crop" if crop else "letterbox", crop or size, max_pixels, name)


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def gather(inputs: list[Path], classes: list[str]) -> list[tuple[Path, str | None]]:
    """(path, true class or None) per image. A folder with sub-folders is labelled
    (``DIR/<class>/...``); one without is a plain list of images; a file is itself."""
    items: list[tuple[Path, str | None]] = []
    labelled = plain = False
    for source in inputs:
        if not source.is_dir():
            items.append((source, None))   # a missing file is reported with the images
            plain = True
            continue
        subdirs = sorted(p for p in source.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not subdirs:
            items += [(p, None) for p in _images_in(source)]
            plain = True
            continue
        unknown = [str(d) for d in subdirs if d.name not in classes]
        if unknown:
            raise UsageError(f"{', '.join(unknown)}: not {'a class' if len(unknown) == 1 else 'classes'} "
                             f"of the model (its classes: {', '.join(classes)})")
        loose = [p for p in source.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        if loose:
            print(f"kiln: warning: {source}: {len(loose)} image(s) outside the class folders, not scored",
                  file=sys.stderr)
        for sub in subdirs:
            items += [(p, sub.name) for p in _images_in(sub)]
        labelled = True
    if labelled and plain:
        raise UsageError("a labelled folder (DIR/<class>/...) cannot be mixed with plain files or unlabelled folders")
    if not items:
        raise StageError(f"{', '.join(map(str, inputs))}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return items


@dataclass
class Scored:
    path: Path
    label: str | None             # the true class (labelled folders), else None
    probs: torch.Tensor           # (C,)


def score(items: list[tuple[Path, str | None]], clf: Classifier, *, max_pixels: int = MAX_PIXELS,
          batch_size: int = 64, errors: list[StageError] | None = None) -> Iterator[Scored]:
    """Classify in batches, in order. A file that fails is appended to ``errors`` (and skipped),
    or, when ``errors`` is None, raised."""
    with tqdm(total=len(items), desc="classify", unit="img", disable=None, file=sys.stderr) as bar:
        yield from _score(items, clf, max_pixels, batch_size, errors, bar)


def _score(items, clf, max_pixels, batch_size, errors, bar) -> Iterator[Scored]:
    for start in range(0, len(items), batch_size):
        arrays, kept = [], []
        for path, label in items[start:start + batch_size]:
            try:
                arrays.append(clf.preset.pixels(path, max_pixels) if clf.preset is not None
                              else read_image(path, clf.size, max_pixels, clf.crop))
                kept.append((path, label))
            except StageError as err:
                if errors is None:
                    raise
                errors.append(err)
                tqdm.write(f"kiln: error: {err}", file=sys.stderr)
        if arrays:
            images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
            for (path, label), probs in zip(kept, clf.probabilities(images)):
                yield Scored(path, label, probs)
        bar.update(len(items[start:start + batch_size]))


def top(probs: torch.Tensor, classes: list[str], k: int) -> list[dict]:
    values, indices = probs.topk(min(k, len(classes)))
    return [{"label": classes[i], "probability": round(p, 6)} for p, i in zip(values.tolist(), indices.tolist())]


def classify(paths: list[str | Path], checkpoint: str | Path, *, topk: int = 3, device: str = "cpu",
             batch_size: int = 64, max_pixels: int = MAX_PIXELS) -> list[list[tuple[str, float]]]:
    """Top-k (label, probability) per image, labels in the checkpoint's training order.
    The first file that cannot be classified raises its StageError."""
    clf = load_model(checkpoint, device)
    return [[(t["label"], t["probability"]) for t in top(s.probs, clf.classes, topk)]
            for s in score([(Path(p), None) for p in paths], clf, max_pixels=max_pixels, batch_size=batch_size)]


# --- the report --------------------------------------------------------------------
def _cell(value: float, defined) -> str:
    return f"{value:.3f}" if defined else "-"     # recall of a class with no images: undefined


def report_table(rows: list[dict], classes: list[str], failed: int) -> str:
    """Overall accuracy and per-class precision/recall/F1 and counts, as a small text table."""
    index = {c: i for i, c in enumerate(classes)}
    labels = np.array([index[r["class"]] for r in rows])
    preds = np.array([index[r["predicted"]] for r in rows])
    metrics = classification_metrics(labels, preds, classes)
    predicted = np.bincount(preds, minlength=len(classes))
    correct = np.bincount(labels[labels == preds], minlength=len(classes))
    present = [c for c in classes if metrics["per_class"][c]["support"]]
    macro = float(np.mean([metrics["per_class"][c]["f1"] for c in present]))
    head = (f"accuracy {metrics['accuracy']:.3f} ({int(correct.sum())}/{len(rows)} images)   "
            f"macro F1 {macro:.3f} (over the {len(present)} class(es) with images)")
    lines = [head]
    if failed:
        lines[0] += f"   {failed} file(s) not classified (errors on stderr)"
    width = max(len("class"), *map(len, classes))
    lines.append(f"{'class':<{width}}  precision  recall     f1  images  predicted  correct")
    for i, c in enumerate(classes):
        m = metrics["per_class"][c]
        lines.append(f"{c:<{width}}  {_cell(m['precision'], predicted[i]):>9}  {_cell(m['recall'], m['support']):>6}"
                     f"  {_cell(m['f1'], m['support']):>5}  {m['support']:>6}  {predicted[i]:>9}  {correct[i]:>7}")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="kiln classify", description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="+", type=Path, metavar="FILE|DIR",
                        help="image files, a folder of images, or a labelled folder DIR/<class>/*.jpg")
    parser.add_argument("--model", type=Path, default=Path("models/classifier/model.pt"))
    parser.add_argument("--topk", type=int, default=3)
    parser.add_argument("--out", type=Path, help="write one JSON line per classified image here")
    parser.add_argument("--max-pixels", type=int, default=MAX_PIXELS,
                        help="refuse (before decoding) images whose header claims more pixels")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    for name in ("topk", "max_pixels", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    clf = load_model(args.model, args.device)
    try:
        items = gather(args.inputs, clf.classes)
    except UsageError as err:
        print(f"kiln: error: {err}", file=sys.stderr)
        sys.exit(2)
    labelled = items[0][1] is not None
    errors: list[StageError] = []
    rows = []
    for s in score(items, clf, max_pixels=args.max_pixels, batch_size=args.batch_size, errors=errors):
        predictions = top(s.probs, clf.classes, args.topk)
        predicted = clf.classes[int(s.probs.argmax())]
        rows.append({"path": str(s.path), "class": s.label, "predicted": predicted,
                     "correct": None if s.label is None else predicted == s.label, "topk": predictions})
        if not labelled:   # today's output, streamed
            print(json.dumps({"path": str(s.path), "success": True, "predictions": predictions}), flush=True)
    if labelled and rows:
        print(report_table(rows, clf.classes, len(errors)))
    if args.out:
        write_jsonl(args.out, rows)
        if labelled:
            print(f"classify: {len(rows)} predictions written to {args.out}")
    if errors:
        raise StageError(f"{len(errors)} of {len(items)} file(s) could not be classified (named above)")


if __name__ == "__main__":
    run_stage(main)
