"""split: stratified, seeded, groups never straddle splits, shards match the manifest."""
from __future__ import annotations

import copy
import json
import shutil

import pytest

import stages.split.__main__ as split
from stages.shared.shards import load_shard
from tests.conftest import write_params
from tests.helpers import shapes_dataset


@pytest.fixture
def dataset(tmp_path):
    return shapes_dataset(tmp_path / "raw", per_class=40)


def run_split(tmp_path, repo_params, manifest, **changes):
    data = copy.deepcopy(repo_params)
    data["base"]["image_size"] = 32
    for key, value in changes.items():
        data["split"][key] = value
    params = write_params(tmp_path / "params.yaml", data)
    out = tmp_path / "split"
    split.main(["--input", str(manifest), "--out", str(out), "--params", str(params)])
    return out


def test_stratified_and_deterministic(tmp_path, repo_params, dataset):
    out = run_split(tmp_path, repo_params, dataset, near_duplicates=-1)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["train"] == {"bowl": 28, "vase": 28}
    assert summary["counts"]["test"]["bowl"] == summary["counts"]["test"]["vase"]
    first = (out / "manifest.jsonl").read_text()
    shutil.rmtree(out)
    assert (run_split(tmp_path, repo_params, dataset, near_duplicates=-1) / "manifest.jsonl").read_text() == first
    train = load_shard(out / "train.pt")
    assert train.images.shape == (56, 3, 32, 32) and train.classes == ["bowl", "vase"]
    assert train.factor_names == ["x"] and train.fields.shape == (56, 2)


def test_duplicates_share_a_split(tmp_path, repo_params, dataset):
    rows = [json.loads(line) for line in dataset.read_text().splitlines()]
    rows += [dict(r) for r in rows[:20]]  # byte-identical copies of 20 images
    dataset.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = run_split(tmp_path, repo_params, dataset, near_duplicates=-1)
    placed = {}
    for row in map(json.loads, (out / "manifest.jsonl").read_text().splitlines()):
        placed.setdefault(row["sha256"], set()).add(row["split"])
    assert all(len(s) == 1 for s in placed.values())
    assert json.loads((out / "summary.json").read_text())["merged_into_groups"] == 20


def test_rebalance_applies_to_train_only(tmp_path, repo_params, dataset):
    rows = [json.loads(line) for line in dataset.read_text().splitlines()]
    rows = [r for r in rows if r["class"] == "bowl"] + [r for r in rows if r["class"] == "vase"][:10]
    dataset.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = run_split(tmp_path, repo_params, dataset, rebalance={"mode": "max"}, near_duplicates=-1)
    train = load_shard(out / "train.pt")
    assert train.class_counts() == [28, 28]
    assert load_shard(out / "val.pt").class_counts() == [6, 2]


def test_corrupt_image_is_named(tmp_path, repo_params, dataset):
    bad = tmp_path / "raw" / "bowl" / "000.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(split.StageError, match="000.png: cannot decode image"):
        run_split(tmp_path, repo_params, dataset)
    assert not (tmp_path / "split").exists()


def test_near_duplicates_share_a_split(tmp_path, repo_params, dataset):
    """Re-encoded, slightly brightened copies are grouped with their originals."""
    import hashlib

    from PIL import Image, ImageEnhance

    rows = [json.loads(line) for line in dataset.read_text().splitlines()]
    copies = []
    for i, row in enumerate(rows[::4]):
        with Image.open(row["path"]) as img:
            copy_path = tmp_path / f"copy{i}.jpg"
            ImageEnhance.Brightness(img.convert("RGB")).enhance(1.05).save(copy_path, quality=90)
        copies.append({**row, "path": str(copy_path),
                       "sha256": hashlib.sha256(copy_path.read_bytes()).hexdigest()})
    dataset.write_text("".join(json.dumps(r) + "\n" for r in rows + copies))
    out = run_split(tmp_path, repo_params, dataset, near_duplicates=4)
    placed = {row["path"]: row for row in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())}
    for original, copy in zip(rows[::4], copies):
        assert placed[original["path"]]["group"] == placed[copy["path"]]["group"]
        assert placed[original["path"]]["split"] == placed[copy["path"]]["split"]
    assert json.loads((out / "summary.json").read_text())["merged_into_groups"] >= len(copies)
