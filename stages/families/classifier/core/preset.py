"""The one preprocessing preset: how an image file becomes what a trained classifier's layers see.

evaluate@classifier, ``kiln classify``, ``kiln serve`` and ``kiln export`` all take it from
here, so an image is never prepared one way for the test metrics and another for a user.
A checkpoint yields a ``Preset``:

* bnconv (no ``preprocess`` record): the split stage's letterbox at the checkpoint's
  ``image_size`` (``images.load_rgb``: the longer side shrunk to S, never enlarged, centred
  on an S x S canvas of the border's median colour), then ``(x / 255 - 0.5) / 0.5``.
* a backbone (``preprocess`` {resize, crop, mean, std}, written by train@classifier): the
  image store's eval view (EXIF orientation applied, the centre square of side
  shorter * 0.875 resized to ``crop``: shorter side to ``resize``, centre crop ``crop``), then
  ``(x / 255 - mean) / std``.

``pixels`` gives the uint8 view (the header is checked against a pixel cap before any pixel
is decoded), ``normalise`` the float input of the layers (``nets.to_float``, the function
bnconv's ``make_preprocess`` applies; TransferNet's ``forward`` does the same operations with
the recorded mean/std, tests/test_export.py holds them bit-identical). The eager models
normalise themselves; an exported model expects it done (its metadata carries ``record()``).
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
import torch
from PIL import Image, ImageOps

from stages.common.errors import StageError
from stages.families.classifier.core import model_from_checkpoint
from stages.families.classifier.core.backbones import ARCHS
from stages.shared.checkpoint import load_checkpoint
from stages.shared.images import DECODE_ERRORS, load_rgb
from stages.shared.nets import to_float
from stages.shared.packs import open_image, split_packed
from stages.shared.store import EVAL_CROP_RATIO, eval_image

MAX_PIXELS = 40_000_000   # the crawl's default (crawl.max_pixels): a bigger header is refused unread
BNCONV_NORM = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))   # bnconv trains on [-1, 1] (nets.to_float's default)
View = Literal["letterbox", "centre_crop"]
ImageSource = str | Path | bytes | bytearray | memoryview | BinaryIO


@dataclass(frozen=True)
class Preset:
    view: View
    resize: int                          # letterbox: longer side to at most this; centre_crop: shorter side
    crop: int                            # S: the model input is S x S
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def record(self) -> dict:
        """What an export's metadata says the model expects (JSON-ready)."""
        return {"view": self.view, "resize": self.resize, "crop": self.crop,
                "mean": list(self.mean), "std": list(self.std)}

    def pixels(self, source: ImageSource, max_pixels: int = MAX_PIXELS, name: str | None = None) -> np.ndarray:
        """(S, S, 3) uint8 of an image file, bytes or binary file object; a one-line StageError
        for a file that is missing, not an image, or over ``max_pixels`` (refused unread)."""
        return decode_view(source, self.view, self.crop, max_pixels, name)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, S, S) -> float32 (x / 255 - mean) / std."""
        return to_float(images, self.mean, self.std)

    def batch(self, arrays: list[np.ndarray]) -> torch.Tensor:
        """float32 (B, 3, S, S), normalised: what an exported model takes, from ``pixels`` outputs."""
        return self.normalise(torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous())


def eval_view_preset(crop: int, mean, std) -> Preset:
    return Preset("centre_crop", round(crop / EVAL_CROP_RATIO), crop, tuple(mean), tuple(std))


def letterbox_preset(size: int, mean=BNCONV_NORM[0], std=BNCONV_NORM[1]) -> Preset:
    return Preset("letterbox", size, size, tuple(mean), tuple(std))


# --- from a checkpoint -------------------------------------------------------------------
def load_with_preset(path, device: torch.device | str = "cpu"):
    """(model in eval mode, class names in training order, preprocess, Preset) from a kiln
    classifier checkpoint: the Preset says how an image file becomes what ``preprocess`` takes."""
    return classifier_from_checkpoint(load_checkpoint(path, device), path, device)


def classifier_from_checkpoint(checkpoint: dict, path, device: torch.device | str = "cpu"):
    """load_with_preset for a checkpoint dict already read (``path`` names it in errors); the
    preset first, so a bad ``preprocess`` record is refused before any weights are built."""
    preset = checkpoint_preset(checkpoint, path)
    return (*model_from_checkpoint(checkpoint, device), preset)


def checkpoint_preset(checkpoint: dict, path: str | Path = "checkpoint") -> Preset:
    """The preset of a classifier checkpoint dict (see the module doc); an unknown
    ``preprocess`` record is refused, not guessed."""
    arch = (checkpoint.get("config") or {}).get("arch", "bnconv")
    size = int(checkpoint.get("image_size", 64))
    record = checkpoint.get("preprocess")
    if record is None:
        if arch == "bnconv":
            return letterbox_preset(size)
        # a backbone saved before the store: it trained on the letterboxed shards, resizing inside
        mean, std = ARCHS[arch].norm if arch in ARCHS else BNCONV_NORM
        return letterbox_preset(size, mean, std)
    return _recorded(record, path)


def _recorded(record, path) -> Preset:
    crop = record.get("crop") if isinstance(record, dict) else None
    if not isinstance(crop, int) or crop < 1 or record.get("resize") != round(crop / EVAL_CROP_RATIO) \
            or record.get("view", "centre_crop") != "centre_crop" \
            or not all(_three_floats(record.get(k)) for k in ("mean", "std")):
        raise StageError(f"{path}: unsupported 'preprocess' record {record!r} (expected resize = "
                         f"round(crop / {EVAL_CROP_RATIO}) and 3 mean/std values, as train@classifier writes)")
    return eval_view_preset(crop, record["mean"], record["std"])


def _three_floats(values) -> bool:
    return isinstance(values, (list, tuple)) and len(values) == 3 and all(isinstance(v, (int, float)) for v in values)


# --- decoding ----------------------------------------------------------------------------
def _rewindable(source: ImageSource) -> tuple[str | Path | BinaryIO, str]:
    """(something Image.open reads twice, from offset 0, and its name for errors)."""
    if isinstance(source, (str, Path)):
        if split_packed(source) is None:
            return source, str(source)
        try:     # a pack member (data/raw/<class>/<xx>.zip/<sha256>.<ext>, as manifests name it)
            return open_image(source), str(source)
        except FileNotFoundError:
            raise StageError(f"{source}: no such image file") from None
    if isinstance(source, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(source)), "image"
    name = str(getattr(source, "name", "image"))
    if not source.seekable() or source.tell():
        # a socket-like stream, or one the caller has read into (Pillow always rewinds to 0):
        # take the rest once (the caller bounds its size)
        return io.BytesIO(source.read()), name
    return source, name


def _header_size(opened, label: str, max_pixels: int) -> tuple[int, int]:
    try:
        with warnings.catch_warnings():   # our own cap below decides, not Pillow's warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(opened) as img:       # parses the header only
                return img.size
    except FileNotFoundError:
        raise StageError(f"{label}: no such image file") from None
    except Image.DecompressionBombError:  # over Pillow's own hard limit: it gives no size, only that
        raise StageError(f"{label}: refused before decoding, too many pixels (the header claims over "
                         f"{2 * Image.MAX_IMAGE_PIXELS} > --max-pixels {max_pixels})") from None
    except DECODE_ERRORS as err:
        raise StageError(f"{label}: not a readable image ({err.__class__.__name__})") from None


def _centre_view(opened, crop: int) -> np.ndarray:
    """(crop, crop, 3) uint8: the image store's eval view, orientation as the store keeps it."""
    with Image.open(opened) as img:
        view = eval_image(ImageOps.exif_transpose(img).convert("RGB"), crop)
    return view.permute(1, 2, 0).numpy()


def decode_view(source: ImageSource, view: View, size: int, max_pixels: int = MAX_PIXELS,
                name: str | None = None) -> np.ndarray:
    """(size, size, 3) uint8: ``view`` of an image, refused from its header when it claims more
    than ``max_pixels``. Every failure is a one-line StageError starting with the name."""
    opened, default_name = _rewindable(source)
    label = name or default_name
    width, height = _header_size(opened, label, max_pixels)
    if width * height > max_pixels:
        raise StageError(f"{label}: refused before decoding, too many pixels "
                         f"({width}x{height} > --max-pixels {max_pixels})")
    if not isinstance(opened, (str, Path)):
        opened.seek(0)
    try:
        return _centre_view(opened, size) if view == "centre_crop" else load_rgb(opened, size)
    except FileNotFoundError:
        raise StageError(f"{label}: no such image file") from None
    except DECODE_ERRORS as err:  # truncated or corrupt pixel data
        raise StageError(f"{label}: not a readable image ({err.__class__.__name__})") from None
