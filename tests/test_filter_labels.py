"""Label sources: curated folder, weak crawl labels, demo ground truth; priority and hold-out."""
import hashlib

import numpy as np
import pytest
from PIL import Image

from stages.filter.labels import (Example, gather_examples, holdout_mask, join_truth)
from stages.filter.config import DemoLabels, FilterLabels
from stages.common.errors import StageError

NO_DEMO = DemoLabels(keep=[], reject=[])   # no demo ground truth (required: the shipped filters' differ)


def rows_and_truth():
    rows = [{"path": f"raw/{k}.png", "sha256": f"s{k}", "class": "bowl", "term": t}
            for k, t in enumerate(["bowl", "bowl", "plate", "bowl"])]
    truth = [{"sha256": "s0", "kind": "pot", "junk": None}, {"sha256": "s1", "kind": "distractor", "junk": None},
             {"sha256": "s2", "kind": "junk", "junk": "blurry"}]
    return rows, truth


def test_join_truth_hands_duplicate_bytes_out_in_order():
    rows = [{"sha256": "a"}, {"sha256": "a"}, {"sha256": "b"}, {"sha256": "zz"}]
    truth = [{"sha256": "a", "kind": "junk", "junk": "exact_duplicate"}, {"sha256": "a", "kind": "pot"},
             {"sha256": "b", "kind": "pot"}]
    joined = join_truth(rows, truth)
    assert [j and j["kind"] for j in joined] == ["pot", "junk", "pot", None]


def test_join_truth_falls_back_to_the_served_file_name():
    rows = [{"sha256": "reencoded", "source_url": "http://127.0.0.1:8123/files/vase-junk-00009.png?x=1"},
            {"sha256": "other", "source_url": "http://127.0.0.1:8123/files/unknown.png"}]
    truth = [{"sha256": "original", "kind": "junk", "junk": "grayscale", "file": "data/demo/files/vase-junk-00009.png"}]
    assert join_truth(rows, truth) == [truth[0], None]


def test_weak_labels_from_terms():
    rows, _ = rows_and_truth()
    examples = gather_examples(rows, None, FilterLabels(weak=True, negative_terms=["plate"], demo=NO_DEMO))
    assert [(e.row, e.keep, e.source) for e in examples] == [(0, 1, "weak"), (1, 1, "weak"), (2, 0, "weak"),
                                                             (3, 1, "weak")]


def test_demo_labels_override_weak_and_map_junk_types():
    rows, truth = rows_and_truth()
    labels = FilterLabels(weak=True, negative_terms=["plate"],
                          demo=DemoLabels(keep=["pot", "distractor"], reject=["blurry"]))
    examples = gather_examples(rows, join_truth(rows, truth), labels)
    assert [(e.row, e.keep, e.source) for e in examples] == [(0, 1, "demo"), (1, 1, "demo"), (2, 0, "demo"),
                                                             (3, 1, "weak")]


def test_folder_labels_win_and_link_to_crawled_rows(tmp_path):
    for side, colour in (("keep", (200, 10, 10)), ("reject", (10, 200, 10))):
        (tmp_path / "labels" / side).mkdir(parents=True)
        Image.new("RGB", (8, 8), colour).save(tmp_path / "labels" / side / "a.png")
    (tmp_path / "labels" / "keep" / "notes.txt").write_text("ignored")
    crawled = hashlib.sha256((tmp_path / "labels/reject/a.png").read_bytes()).hexdigest()
    rows = [{"path": "raw/x.png", "sha256": crawled, "class": "bowl", "term": "bowl"}]
    examples = gather_examples(rows, None, FilterLabels(folder=str(tmp_path / "labels"), weak=True, demo=NO_DEMO))
    assert [(e.row, e.keep, e.source) for e in examples] == [(0, 0, "folder"), (None, 1, "folder")]


def test_folder_without_subfolders_is_an_error(tmp_path):
    with pytest.raises(StageError, match="keep/ and reject/"):
        gather_examples([], None, FilterLabels(folder=str(tmp_path), demo=NO_DEMO))


def test_holdout_is_stratified_and_seeded():
    examples = [Example(f"{k}", int(k < 80), "demo", k) for k in range(100)]
    held = holdout_mask(examples, 0.25, seed=3)
    labels = np.array([e.keep for e in examples])
    assert held[labels == 1].sum() == 20 and held[labels == 0].sum() == 5
    assert np.array_equal(held, holdout_mask(examples, 0.25, seed=3))
    assert not np.array_equal(held, holdout_mask(examples, 0.25, seed=4))


def test_for_class_turns_other_classes_into_rejects():
    from stages.filter.labels import for_class

    rows = [{"class": "bowl"}, {"class": "vase"}, {"class": "bowl"}]
    examples = [Example("a", 1, "weak", 0), Example("b", 1, "weak", 1), Example("c", 0, "weak", 2),
                Example("curated_keep", 1, "folder", None), Example("curated_reject", 0, "folder", None)]
    bowl = {e.path: e.keep for e in for_class(examples, rows, "bowl")}
    assert bowl == {"a": 1, "b": 0, "c": 0, "curated_reject": 0}     # a classless keep says nothing of bowls
    vase = {e.path: e.keep for e in for_class(examples, rows, "vase")}
    assert vase == {"a": 0, "b": 1, "c": 0, "curated_reject": 0}
