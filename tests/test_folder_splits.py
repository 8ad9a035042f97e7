"""engine: folder over a tree with its own train/ val/ test/ splits: rows record their split,
and neither the crawl nor the filter lets a copy of a val or test image stay in train."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

import stages.crawl.__main__ as crawl_stage
import stages.filter.__main__ as filter_stage
from tests.test_filter_stage import encode, pot

CLASSES = ["cat", "dog"]   # any classes: only engine local needs the demo's


def write_params(root: Path, folder: Path) -> Path:
    data = {"base": {"seed": 3, "classes": CLASSES, "threads": 1},
            "crawl": {"engine": "folder", "folder": str(folder)},
            "filter": {"cascade": [], "contact_sheet": 4}}
    (root / "params.yaml").write_text(yaml.safe_dump(data))
    return root / "params.yaml"


def make_tree(root: Path, splits=("train", "val"), per_class: int = 3, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for split in splits:
        for cls in CLASSES:
            (root / split / cls).mkdir(parents=True)
            for i in range(per_class):
                (root / split / cls / f"{i}.png").write_bytes(encode(pot(rng)))


def crawl(tmp_path: Path, tree: Path, capsys=None) -> list[dict]:
    params = write_params(tmp_path, tree)
    crawl_stage.main(["--params", str(params), "--out", "data/raw", "--work", str(tmp_path / "work")])
    return [json.loads(line) for line in open("data/raw/manifest.jsonl")]


def test_split_trees_give_each_row_its_split(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    make_tree(tmp_path / "mine", splits=("train", "validation", "test"))
    rows = crawl(tmp_path, tmp_path / "mine")
    assert sorted((r["split"], r["class"]) for r in rows) == sorted(
        (s, c) for s in ("train", "val", "test") for c in CLASSES for _ in range(3))
    for row in rows:   # validation/ is the Keras name of val/
        folder = {"val": "validation"}.get(row["split"], row["split"])
        assert f"/mine/{folder}/{row['class']}/" in row["source_url"]
    assert "train 6, val 6, test 6" in capsys.readouterr().out


def test_a_tree_without_splits_writes_no_split_key(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_tree(tmp_path / "mine", splits=("",))
    rows = crawl(tmp_path, tmp_path / "mine")
    assert len(rows) == 6 and not any("split" in r for r in rows)


def test_identical_bytes_in_two_splits_stay_in_the_more_protected_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_tree(tmp_path / "mine", splits=("train", "test"))
    data = (tmp_path / "mine/test/dog/1.png").read_bytes()
    (tmp_path / "mine/train/dog/copy.png").write_bytes(data)
    rows = crawl(tmp_path, tmp_path / "mine")
    kept = [r for r in rows if r["source_url"].endswith(("test/dog/1.png", "train/dog/copy.png"))]
    assert [r["split"] for r in kept] == ["test"]
    failures = [json.loads(line) for line in open("data/raw/failures.jsonl")]
    assert [f["split"] for f in failures if f["reason"].startswith("duplicate of")] == ["train"]


def test_filter_keeps_the_val_copy_of_a_near_duplicate_pair(tmp_path, monkeypatch):
    """The train copy is a lossless PNG, which the filter would otherwise prefer to the val
    copy, a JPEG re-encode of it: the split decides first."""
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    make_tree(tmp_path / "mine", splits=("train", "val"))
    original = Image.open(tmp_path / "mine/train/cat/0.png").convert("RGB")
    (tmp_path / "mine/val/cat/near.jpg").write_bytes(encode(original, "JPEG", quality=85))
    rows = crawl(tmp_path, tmp_path / "mine")
    filter_stage.main(["--input", "data/raw/manifest.jsonl", "--out", "data/filtered", "--models", "models/filter",
                       "--metrics", "metrics/filter.json", "--sheets", "metrics/filter", "--params", "params.yaml"])
    kept = [json.loads(line) for line in open("data/filtered/manifest.jsonl")]
    rejected = [json.loads(line) for line in open("data/filtered/rejected.jsonl")]
    assert [(r["split"], Path(r["source_url"]).name) for r in rejected] == [("train", "0.png")]
    assert rejected[0]["reasons"] == ["near_duplicate"] and rejected[0]["duplicate_of"].endswith(".jpg")
    assert len(kept) == len(rows) - 1 and {r["split"] for r in kept} == {"train", "val"}
    near = next(r for r in kept if r["source_url"].endswith("near.jpg"))
    assert near["split"] == "val"


@pytest.mark.parametrize("layout, message", [
    (("train", "val", "extra"), "mine/extra is not a split folder"),
    (("train", "val", "validation"), "has both val/ and validation/"),
    (("val", "test"), "has test/ but no train/"),
])
def test_bad_split_trees_are_one_clear_line(tmp_path, monkeypatch, capsys, layout, message):
    monkeypatch.chdir(tmp_path)
    for name in layout:
        for cls in CLASSES:
            (tmp_path / "mine" / name / cls).mkdir(parents=True)
    params = write_params(tmp_path, tmp_path / "mine")
    with pytest.raises(SystemExit) as exit_info:
        crawl_stage.run_stage(crawl_stage.main, ["--params", str(params), "--out", "data/raw",
                                                 "--work", str(tmp_path / "w")])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 1 and len(err.splitlines()) == 1 and message in err, err


def test_a_split_missing_a_class_folder_is_one_clear_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    make_tree(tmp_path / "mine", splits=("train",))
    (tmp_path / "mine/val/cat").mkdir(parents=True)
    params = write_params(tmp_path, tmp_path / "mine")
    with pytest.raises(SystemExit) as exit_info:
        crawl_stage.run_stage(crawl_stage.main, ["--params", str(params), "--out", "data/raw",
                                                 "--work", str(tmp_path / "w")])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 1
    assert err.endswith("mine/val/dog is not a directory (one per class expected)")
