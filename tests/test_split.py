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


# --- given splits (a folder source with train/ val/ test/ trees) and the image store ------
def _with_given_splits(dataset, assign):
    """Rewrite the manifest with a ``split`` key per row from ``assign(i, row)``."""
    rows = [json.loads(line) for line in dataset.read_text().splitlines()]
    dataset.write_text("".join(json.dumps({**r, "split": assign(i, r)}) + "\n" for i, r in enumerate(rows)))
    return rows


def _splits(out):
    return {row["path"]: row["split"] for row in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())}


def test_given_splits_are_kept_and_test_is_carved_from_train(tmp_path, repo_params, dataset):
    rows = _with_given_splits(dataset, lambda i, r: "val" if i % 4 == 0 else "train")
    out = run_split(tmp_path, repo_params, dataset, near_duplicates=-1)
    placed = _splits(out)
    assert all(placed[r["path"]] == "val" for i, r in enumerate(rows) if i % 4 == 0)   # honoured
    carved = [placed[r["path"]] for i, r in enumerate(rows) if i % 4]
    assert set(carved) == {"train", "test"}       # no test/ tree: test comes out of train only
    summary = json.loads((out / "summary.json").read_text())
    assert summary["splits_from"] == "given: train, val"
    # test takes its share of train's rows: 0.15 / (0.7 + 0.15) of 30 per class, about 5
    assert summary["counts"]["val"] == {"bowl": 10, "vase": 10}
    assert 4 <= summary["counts"]["test"]["bowl"] <= 6


def test_a_copy_of_a_val_image_never_trains(tmp_path, repo_params, dataset):
    rows = [json.loads(line) for line in dataset.read_text().splitlines()]
    rows[1]["sha256"] = rows[0]["sha256"]   # row 1 is a byte copy of row 0
    dataset.write_text("".join(json.dumps({**r, "split": "val" if i == 0 else "train"}) + "\n"
                               for i, r in enumerate(rows)))
    out = run_split(tmp_path, repo_params, dataset, near_duplicates=-1)
    placed = _splits(out)
    assert placed[rows[0]["path"]] == "val" and placed[rows[1]["path"]] is None
    assert json.loads((out / "summary.json").read_text())["dropped_cross_split_copies"] == 1
    assert rows[1]["path"] not in load_shard(out / "train.pt").paths


def test_a_split_name_the_stage_does_not_know_stops_it(tmp_path, repo_params, dataset):
    _with_given_splits(dataset, lambda i, r: "holdout" if i == 3 else "train")
    with pytest.raises(split.StageError, match="split 'holdout'"):
        run_split(tmp_path, repo_params, dataset)


def test_small_val_and_test_splits_are_warned_about(tmp_path, repo_params, dataset, capsys):
    run_split(tmp_path, repo_params, dataset, near_duplicates=-1)
    err = capsys.readouterr().err
    # 40 per class at 0.15: 6 val and 6 test images per class, far below 50
    assert "kiln: warning: split: val has 6 images of class 'bowl'" in err
    assert "test has 6 images of class 'vase'" in err


def test_the_store_holds_every_split_full_size_and_byte_identically(tmp_path, repo_params, dataset):
    from stages.shared.store import load_batches, open_store
    out = run_split(tmp_path, repo_params, dataset, near_duplicates=-1)
    for name in ("train", "val", "test"):
        store, shard = open_store(out / "full", name), load_shard(out / f"{name}.pt")
        assert store.paths == shard.paths and store.labels == shard.labels.tolist()
    images, labels = next(load_batches(open_store(out / "full", "val"), image_size=48, batch_size=4, train=False))
    assert images.shape == (4, 3, 48, 48) and images.dtype.is_floating_point is False
    first = {p.name: p.read_bytes() for p in (out / "full").iterdir()}
    shutil.rmtree(out)
    again = run_split(tmp_path, repo_params, dataset, near_duplicates=-1)
    assert {p.name: p.read_bytes() for p in (again / "full").iterdir()} == first
