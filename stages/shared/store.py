"""The full-resolution image store: what backbones train on at their own input size.

The 64-px shards (shards.py) are decoded, letterboxed tensors: right for the small
from-scratch and generative models, wrong for a backbone that wants 224 px and
RandomResizedCrop over the whole photo. The store keeps each image encoded (JPEG, or
PNG when the source was PNG), its shorter side at most ``size`` (never upsampled, aspect
kept), in tar chunks of ``per_chunk`` images:

    <dir>/<name>-00000.tar   <key>.jpg|.png  +  <key>.cls (class index, text)
    <dir>/<name>.json        classes, counts, chunk list, labels/sha256/paths per image

The tar layout is WebDataset's, so the chunks open in ``webdataset`` or any tar tool;
reading them takes the standard library alone, so kiln does not depend on it. 100k photos
stay a few hundred files for DVC, and a reader holds only a window of chunks (encoded) in
memory, never a decoded split.
"""
from __future__ import annotations

import io
import json
import math
import tarfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image, ImageOps

from stages.common.errors import StageError
from stages.shared.images import DECODE_ERRORS
from stages.shared.packs import open_image

STORE_DIR = "full"           # data/split/full
EVAL_CROP_RATIO = 0.875      # torchvision's Resize(256) -> CenterCrop(224)
WINDOW_CHUNKS = 4            # chunks shuffled together while training


@dataclass
class Store:
    directory: Path
    name: str
    classes: list[str]
    labels: list[int]
    sha256: list[str]
    paths: list[str]
    chunks: list[dict]        # [{"file": str, "count": int}], in store order
    size: int

    def __len__(self) -> int:
        return len(self.labels)

    def class_counts(self) -> list[int]:
        return np.bincount(np.asarray(self.labels, dtype=np.int64), minlength=len(self.classes)).tolist()


# --- writing ----------------------------------------------------------------------
def _encode(path: str, size: int) -> tuple[bytes, str]:
    """(encoded bytes, extension) of ``path`` with its shorter side at most ``size``."""
    try:
        with open_image(path) as opened, Image.open(opened) as img:
            fmt = img.format
            if fmt == "JPEG":   # decode at a reduced scale when the file is much larger
                scale = size / min(img.size)
                img.draft("RGB", (math.ceil(img.width * scale), math.ceil(img.height * scale)))
            img = ImageOps.exif_transpose(img).convert("RGB")
    except FileNotFoundError:
        raise StageError(f"{path}: no such image file") from None
    except DECODE_ERRORS as err:
        raise StageError(f"{path}: cannot decode image ({err.__class__.__name__})") from None
    shorter = min(img.size)
    if shorter > size:
        scale = size / shorter
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                         Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    if fmt == "PNG":   # lossless sources (the demo's renders) stay lossless
        img.save(buffer, "PNG", optimize=False)
        return buffer.getvalue(), "png"
    img.save(buffer, "JPEG", quality=95)
    return buffer.getvalue(), "jpg"


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)   # fixed metadata: the same images give the same bytes
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tar.addfile(info, io.BytesIO(data))


def write_store(directory: Path, name: str, paths: list[str], labels: list[int], classes: list[str],
                sha256: list[str], *, size: int = 256, per_chunk: int = 512, threads: int = 2) -> dict:
    """Encode ``paths`` into ``directory/<name>-NNNNN.tar`` chunks and write the index; returns it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    chunks = []
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:   # PIL releases the GIL
        for first in range(0, len(paths), per_chunk):
            part = paths[first:first + per_chunk]
            encoded = pool.map(lambda p: _encode(p, size), part)
            file = f"{name}-{len(chunks):05d}.tar"
            with tarfile.open(directory / file, "w", format=tarfile.USTAR_FORMAT) as tar:
                for offset, (data, ext) in enumerate(encoded):
                    key = f"{first + offset:08d}"
                    _add(tar, f"{key}.{ext}", data)
                    _add(tar, f"{key}.cls", str(labels[first + offset]).encode())
            chunks.append({"file": file, "count": len(part)})
    index = {"name": name, "classes": list(classes), "size": size, "count": len(paths), "chunks": chunks,
             "labels": [int(x) for x in labels], "sha256": list(sha256), "paths": [str(p) for p in paths]}
    (directory / f"{name}.json").write_text(json.dumps(index, indent=1) + "\n")
    return index


# --- reading ----------------------------------------------------------------------
def open_store(directory: Path, name: str) -> Store:
    path = Path(directory) / f"{name}.json"
    try:
        index = json.loads(path.read_text())
    except FileNotFoundError:
        raise StageError(f"{path} not found: the split stage writes the image store (dvc repro split)") from None
    except json.JSONDecodeError as err:
        raise StageError(f"{path}: not a kiln store index ({err.msg})") from None
    return Store(Path(directory), name, index["classes"], index["labels"], index["sha256"], index["paths"],
                 index["chunks"], index["size"])


def _read_chunk(store: Store, chunk: dict) -> list[bytes]:
    """The encoded images of one chunk, in key order."""
    images: dict[str, bytes] = {}
    path = store.directory / chunk["file"]
    try:
        with tarfile.open(path, "r") as tar:
            for member in tar:
                stem, _, ext = member.name.rpartition(".")
                if ext in ("jpg", "png"):
                    images[stem] = tar.extractfile(member).read()
    except (OSError, tarfile.TarError) as err:
        raise StageError(f"{path}: unreadable store chunk ({err.__class__.__name__})") from None
    if len(images) != chunk["count"]:
        raise StageError(f"{path}: {len(images)} images, the index says {chunk['count']} (rerun split)")
    return [images[k] for k in sorted(images)]


def _crop_box(width: int, height: int, rng: np.random.Generator, scale: tuple[float, float],
              ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[float, float, float, float]:
    """RandomResizedCrop's box (torchvision's algorithm: 10 tries, then the centre crop)."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w, h = math.sqrt(target * aspect), math.sqrt(target / aspect)
        if 0 < w <= width and 0 < h <= height:
            left, top = rng.uniform(0, width - w), rng.uniform(0, height - h)
            return left, top, left + w, top + h
    aspect = width / height
    if aspect > ratio[1]:      # too wide for any allowed ratio: the widest allowed box
        w, h = height * ratio[1], height
    elif aspect < ratio[0]:    # too tall
        w, h = width, width / ratio[0]
    else:
        w, h = width, height
    left, top = (width - w) / 2, (height - h) / 2
    return left, top, left + w, top + h


def _centre_box(width: int, height: int, image_size: int) -> tuple[float, float, float, float]:
    """Resize shorter side to image_size / 0.875, centre-crop image_size: as one box."""
    side = min(width, height) * EVAL_CROP_RATIO
    left, top = (width - side) / 2, (height - side) / 2
    return left, top, left + side, top + side


def _to_tensor(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).contiguous()


def eval_image(img: Image.Image, image_size: int) -> torch.Tensor:
    """uint8 (3, S, S): the evaluation view of ``img`` (what classify and serve feed a backbone)."""
    if img.mode != "RGB":   # _view has converted already: no second copy on the hot path
        img = img.convert("RGB")
    box = _centre_box(img.width, img.height, image_size)
    return _to_tensor(img.resize((image_size, image_size), Image.Resampling.BILINEAR, box=box))


def _view(data: bytes, image_size: int, rng: np.random.Generator | None,
          crop_scale: tuple[float, float]) -> torch.Tensor:
    """Decode one stored image: a random crop and flip when ``rng`` is given, else the eval view."""
    with Image.open(io.BytesIO(data)) as img:
        img = img.convert("RGB")
        if rng is None:
            return eval_image(img, image_size)
        box = _crop_box(img.width, img.height, rng, crop_scale)
        view = img.resize((image_size, image_size), Image.Resampling.BILINEAR, box=box)
        if rng.random() < 0.5:
            view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return _to_tensor(view)


def _plan(store: Store, train: bool, seed: int, epoch: int) -> list[list[tuple[int, int]]]:
    """Windows of (chunk, position) pairs in reading order: for training the chunks come in a
    seeded permutation and samples are shuffled within a window of WINDOW_CHUNKS chunks."""
    order = list(range(len(store.chunks)))
    rng = np.random.default_rng([seed, epoch])
    if train:
        order = rng.permutation(order).tolist()
    step = WINDOW_CHUNKS if train else 1
    windows = []
    for start in range(0, len(order), step):
        pairs = [(c, i) for c in order[start:start + step] for i in range(store.chunks[c]["count"])]
        windows.append([pairs[j] for j in rng.permutation(len(pairs))] if train else pairs)
    return windows


def _sample_offsets(store: Store) -> list[int]:
    return np.concatenate([[0], np.cumsum([c["count"] for c in store.chunks])]).astype(int).tolist()


def load_batches(store: Store, *, image_size: int, batch_size: int, train: bool, seed: int = 0,
                 epoch: int = 0, crop_scale: tuple[float, float] = (0.08, 1.0), workers: int = 2,
                 rank: int = 0, world: int = 1, drop_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of (uint8 (B,3,S,S), int64 (B,)) from the store, decoded on ``workers`` threads.

    Training views are RandomResizedCrop(image_size, crop_scale) + a horizontal flip, drawn
    from a generator seeded by (seed, epoch, image), so a batch is the same whatever the
    thread count. Rank ``rank`` of ``world`` takes every world-th sample of that order; in
    training the last ``len % world`` are left out, so ranks step in lockstep. ``drop_last`` drops a
    short final batch (batch norm cannot train on one image)."""
    offsets = _sample_offsets(store)
    pending: list[tuple[bytes, int, int]] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        def decode(batch):
            views = pool.map(lambda item: _view(item[0], image_size, np.random.default_rng(
                [seed, epoch, item[2]]) if train else None, crop_scale), batch)
            return torch.stack(list(views)), torch.tensor([item[1] for item in batch], dtype=torch.long)

        position, usable = 0, len(store) - len(store) % world if train else len(store)
        for window in _plan(store, train, seed, epoch):
            loaded = {c: _read_chunk(store, store.chunks[c]) for c in dict.fromkeys(c for c, _ in window)}
            for c, i in window:
                mine, position = position % world == rank and position < usable, position + 1
                if not mine:
                    continue
                index = offsets[c] + i
                pending.append((loaded[c][i], store.labels[index], index))
                if len(pending) == batch_size:
                    yield decode(pending)
                    pending = []
        if pending and not drop_last:
            yield decode(pending)
