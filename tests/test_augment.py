"""augment: growth to N per class, presets, preview grid."""
from __future__ import annotations

import copy

import torch
from PIL import Image

import stages.augment.__main__ as augment
import stages.split.__main__ as split
from stages.augment.config import Augment
from stages.common.params import load_params
from stages.shared.augment_ops import AugmentOps, Crop, Elastic, Erasing, Flip, Rotation
from stages.shared.shards import load_shard
from tests.conftest import REPO, write_params
from tests.helpers import shapes_dataset


def test_preset_is_none_when_all_ops_off():
    off = AugmentOps(elastic=Elastic(p=0.0), hflip=Flip(p=0.0), vflip=Flip(p=0.0), crop=Crop(p=0.0, scale=[0.8, 1.0]),
                     erasing=Erasing(p=0.0), rotation=Rotation(p=0.0))
    assert augment.train_preset(ops=off, size=32) is None


def test_preset_keeps_shape_and_dtype():
    ops = load_params(REPO / "params.yaml", {"augment": Augment}).augment.offline
    preset = augment.train_preset(ops=ops, size=32)
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    out = augment.apply_each(preset, images)
    assert out.shape == images.shape and out.dtype == torch.uint8
    assert not torch.equal(out, images)


def test_stage_grows_each_class_and_writes_preview(tmp_path, repo_params):
    manifest = shapes_dataset(tmp_path / "raw", per_class=20)
    data = copy.deepcopy(repo_params)
    data["base"]["image_size"] = 32
    data["augment"]["per_class"] = 40
    params = write_params(tmp_path / "params.yaml", data)
    split.main(["--input", str(manifest), "--out", str(tmp_path / "split"), "--params", str(params)])
    augment.main(["--input", str(tmp_path / "split" / "train.pt"), "--out", str(tmp_path / "aug"),
                  "--preview", str(tmp_path / "preview"), "--params", str(params)])
    original, grown = load_shard(tmp_path / "split" / "train.pt"), load_shard(tmp_path / "aug" / "train.pt")
    assert grown.class_counts() == [40, 40]
    assert torch.equal(grown.images[:len(original)], original.images)  # originals kept first
    assert sum("#aug" in p for p in grown.paths) == 80 - len(original)
    with Image.open(tmp_path / "preview" / "preview.png") as img:
        assert img.width > 8 * 96 and img.height > 6 * 96
