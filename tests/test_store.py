"""The full-resolution image store: encoded chunks, seeded crops, bounded reading."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from stages.common.errors import StageError
from stages.shared.store import eval_image, load_batches, open_store, write_store


@pytest.fixture
def photos(tmp_path):
    """12 JPEG 'photos' of 300x200 with a distinct colour each, label = index % 2."""
    paths = []
    for i in range(12):
        path = tmp_path / "src" / f"{i:02d}.jpg"
        path.parent.mkdir(exist_ok=True)
        Image.new("RGB", (300, 200), (20 * i, 255 - 20 * i, 128)).save(path, quality=95)
        paths.append(str(path))
    return paths


def _store(tmp_path, photos, **kw):
    write_store(tmp_path / "store", "train", photos, [i % 2 for i in range(12)], ["a", "b"],
                [f"{i:064x}" for i in range(12)], per_chunk=5, **kw)
    return open_store(tmp_path / "store", "train")


def test_images_are_kept_at_the_store_size_and_never_upsampled(tmp_path, photos):
    store = _store(tmp_path, photos, size=100)
    assert len(store) == 12 and [c["count"] for c in store.chunks] == [5, 5, 2]
    images, labels = next(load_batches(store, image_size=64, batch_size=12, train=False))
    assert images.shape == (12, 3, 64, 64) and labels.tolist() == [i % 2 for i in range(12)]
    # the eval view of a flat image is that image's colour (JPEG rounding aside)
    assert abs(int(images[3, 0].float().mean()) - 60) <= 3
    big = _store(tmp_path, photos, size=4096)   # larger than the photo: stored at its own size
    images, _ = next(load_batches(big, image_size=150, batch_size=2, train=False))
    assert images.shape == (2, 3, 150, 150)


def test_training_views_depend_on_seed_and_epoch_not_on_threads(tmp_path, photos):
    store = _store(tmp_path, photos)

    def epoch(seed, number, workers):
        return torch.cat([y for _, y in load_batches(store, image_size=32, batch_size=4, train=True,
                                                     seed=seed, epoch=number, workers=workers)])

    assert torch.equal(epoch(1, 0, 1), epoch(1, 0, 2))
    assert sorted(epoch(1, 0, 1).tolist()) == sorted(i % 2 for i in range(12))   # every image once
    orders = {tuple(epoch(1, n, 1).tolist()) for n in range(6)}
    assert len(orders) > 1                                   # reshuffled per epoch


def test_ranks_read_disjoint_equal_parts(tmp_path, photos):
    store = _store(tmp_path, photos)
    seen = []
    for rank in (0, 1):
        views = [x for x, _ in load_batches(store, image_size=16, batch_size=3, train=False, rank=rank, world=2)]
        seen.append(torch.cat(views))
    assert len(seen[0]) == len(seen[1]) == 6
    assert not any(torch.equal(a, b) for a in seen[0] for b in seen[1])


def test_eval_image_is_the_centre_crop(tmp_path):
    img = Image.new("RGB", (200, 100), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 40, 100))     # a white band at the far left, outside the crop
    view = eval_image(img, 32)
    assert view.shape == (3, 32, 32) and int(view.max()) == 0


def test_a_damaged_chunk_is_named(tmp_path, photos):
    store = _store(tmp_path, photos)
    (store.directory / store.chunks[1]["file"]).write_bytes(b"not a tar")
    with pytest.raises(StageError, match="train-00001.tar"):
        list(load_batches(store, image_size=16, batch_size=4, train=False))
    with pytest.raises(StageError, match="dvc repro split"):
        open_store(tmp_path / "nowhere", "val")


def test_a_missing_source_image_is_named(tmp_path, photos):
    with pytest.raises(StageError, match="nope.jpg: no such image file"):
        write_store(tmp_path / "s", "train", [str(tmp_path / "nope.jpg")], [0], ["a"], ["0" * 64])
