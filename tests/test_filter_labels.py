"""Label sources: curated folder, weak crawl labels, demo ground truth; priority and hold-out."""
import hashlib

import numpy as np
import pytest
from PIL import Image

from stages.filter.labels import Example, gather_examples, holdout_mask
from stages.filter.config import DemoLabels, FilterLabels
from stages.common.errors import StageError

NO_DEMO = DemoLabels(keep=[], reject=[])   # no labels from ground truth (required: the shipped filters' differ)


def rows_with_truth():
    """Crawl rows as the crawl writes them for the demo: each carries the truth its file embedded."""
    truths = [{"kind": "pot", "junk": None}, {"kind": "distractor", "junk": None},
              {"kind": "junk", "junk": "blurry"}, None]
    return [{"path": f"raw/{k}.png", "sha256": f"s{k}", "class": "bowl", "term": t, "truth": truth}
            for k, (t, truth) in enumerate(zip(["bowl", "bowl", "plate", "bowl"], truths))]


def test_weak_labels_from_terms():
    rows = rows_with_truth()
    examples = gather_examples(rows, FilterLabels(weak=True, negative_terms=["plate"], demo=NO_DEMO))
    assert [(e.row, e.keep, e.source) for e in examples] == [(0, 1, "weak"), (1, 1, "weak"), (2, 0, "weak"),
                                                             (3, 1, "weak")]


def test_demo_labels_come_from_row_truth_override_weak_and_map_junk_types():
    rows = rows_with_truth()
    labels = FilterLabels(weak=True, negative_terms=["plate"],
                          demo=DemoLabels(keep=["pot", "distractor"], reject=["blurry"]))
    examples = gather_examples(rows, labels)
    assert [(e.row, e.keep, e.source) for e in examples] == [(0, 1, "demo"), (1, 1, "demo"), (2, 0, "demo"),
                                                             (3, 1, "weak")]   # row 3 carries no truth


def test_rows_without_truth_get_no_demo_labels():
    rows = [{**row, "truth": None} for row in rows_with_truth()]
    labels = FilterLabels(demo=DemoLabels(keep=["pot"], reject=["distractor", "blurry"]))
    assert gather_examples(rows, labels) == []
    del rows[0]["truth"]   # a manifest from elsewhere may not have the key at all
    assert gather_examples(rows, labels) == []


def test_folder_labels_win_and_link_to_crawled_rows(tmp_path):
    for side, colour in (("keep", (200, 10, 10)), ("reject", (10, 200, 10))):
        (tmp_path / "labels" / side).mkdir(parents=True)
        Image.new("RGB", (8, 8), colour).save(tmp_path / "labels" / side / "a.png")
    (tmp_path / "labels" / "keep" / "notes.txt").write_text("ignored")
    crawled = hashlib.sha256((tmp_path / "labels/reject/a.png").read_bytes()).hexdigest()
    rows = [{"path": "raw/x.png", "sha256": crawled, "class": "bowl", "term": "bowl"}]
    examples = gather_examples(rows, FilterLabels(folder=str(tmp_path / "labels"), weak=True, demo=NO_DEMO))
    assert [(e.row, e.keep, e.source) for e in examples] == [(0, 0, "folder"), (None, 1, "folder")]


def test_folder_without_subfolders_is_an_error(tmp_path):
    with pytest.raises(StageError, match="keep/ and reject/"):
        gather_examples([], FilterLabels(folder=str(tmp_path), demo=NO_DEMO))


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
