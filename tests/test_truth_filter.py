"""The filter takes ground truth from the rows alone: labels and a demo block when rows carry it,
neither (and a cascade that says it has nothing to learn from) when they do not."""
from __future__ import annotations

import json
from pathlib import Path

from stages.filter.__main__ import main
from tests.test_filter_stage import ARGS, TINY_FILTER, build_corpus, write_params

NO_LABELS = {"demo": {"keep": [], "reject": []}}


def rows(path: str) -> list[dict]:
    return [json.loads(line) for line in open(path)]


def test_demo_block_counts_the_rows_truth(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    build_corpus(tmp_path)
    raw = rows("data/raw/manifest.jsonl")
    raw[0]["truth"] = None   # one row from elsewhere among the demo's
    Path("data/raw/manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in raw))
    write_params(tmp_path, TINY_FILTER)
    main(ARGS)
    demo = json.load(open("metrics/filter.json"))["demo"]
    kinds = [r["truth"]["kind"] for r in raw if r["truth"]]
    assert demo["all"]["n"] == {kind: kinds.count(kind) for kind in ("junk", "distractor", "pot")}
    assert demo["not_in_truth"] == 1
    assert demo["heldout"]["n"]["pot"] < demo["all"]["n"]["pot"]   # trained-on rows left out


def test_rows_without_truth_get_no_demo_labels_no_demo_block_and_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    build_corpus(tmp_path, with_truth=False)
    write_params(tmp_path, TINY_FILTER)   # the object filter learns from labels.demo alone
    main(ARGS)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 2 and out[0].startswith("filter: no labelled examples for object (")
    assert out[0].endswith("skipped; quality checks only")
    assert "ensembles" not in out[1]
    metrics = json.load(open("metrics/filter.json"))
    assert "demo" not in metrics and metrics["filters"] == {}
    assert json.load(open("models/filter/cascade.json")) == {"ran": [], "skipped": {"object": "no labelled examples"}}
    kept = rows("data/filtered/manifest.jsonl")
    assert kept and all(r["truth"] is None and r["factors"] is None for r in kept)
    assert metrics["counts"]["by_reason"]["exact_duplicate"] == 2   # the quality checks still ran


def test_a_filter_without_examples_is_skipped_and_the_rest_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    build_corpus(tmp_path)
    section = json.loads(json.dumps(TINY_FILTER))
    section["filters"]["usable"] = {**section["filters"]["object"], "labels": NO_LABELS}
    section["cascade"] = ["usable", "object"]
    write_params(tmp_path, section)
    main(ARGS)
    out = capsys.readouterr().out
    assert "no labelled examples for usable (" in out and "the rest of the cascade runs" in out
    cascade = json.load(open("models/filter/cascade.json"))
    assert cascade == {"ran": ["object"], "skipped": {"usable": "no labelled examples"}}
    assert set(json.load(open("metrics/filter.json"))["filters"]) == {"object"}
