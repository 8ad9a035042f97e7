"""crawl.engine local renders the demo corpus itself (no demo stage, no data/demo) and copies
the ground truth every file carries into the manifest rows."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from crawl_fakes import QUIET_LOCAL
import stages.crawl.__main__ as crawl_stage
from stages.common.params import Base
from stages.crawl import demo_corpus
from stages.demo.config import Demo
from stages.demo.render import FACTOR_NAMES

TINY_DEMO = {"n_per_class": 8, "image_size": 32, "distractors_per_class": 2, "junk_per_class": 12}


def write_params(root: Path, classes=("bowl", "vase"), crawl: dict | None = None) -> Path:
    data = {"base": {"seed": 5, "classes": list(classes)}, "demo": TINY_DEMO,
            "crawl": crawl if crawl is not None else {
                "queries": [{"term": "bowl", "class": "bowl", "count": 22},
                            {"term": "vase", "class": "vase", "count": 22}],
                "per_host_rate": 0, "backoff_s": 0.05, "scroll_wait_s": 1.0, "local": QUIET_LOCAL}}
    (root / "params.yaml").write_text(yaml.safe_dump(data))
    return root / "params.yaml"


def test_own_classes_under_the_local_engine_are_one_params_line(tmp_path, capsys):
    params = write_params(tmp_path, classes=("cat", "dog"), crawl={})   # the default engine: local
    with pytest.raises(SystemExit) as exit_info:
        crawl_stage.run_stage(crawl_stage.main, ["--params", str(params), "--out", str(tmp_path / "raw"),
                                                 "--work", str(tmp_path / "w")])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1
    assert "params.yaml:" in err and "base.classes: crawl.engine local crawls the demo corpus" in err
    assert "'cat'" in err and "set crawl.engine" in err
    assert not (tmp_path / "w").exists()   # nothing rendered, nothing started


def test_a_rendered_corpus_is_reused_by_a_resumed_crawl(tmp_path, monkeypatch):
    base, demo = Base(seed=5), Demo(**TINY_DEMO)
    corpus = demo_corpus.ensure_corpus(tmp_path / "fp", base, demo)
    assert (corpus / "index.jsonl").is_file() and corpus == tmp_path / "fp" / "demo"
    monkeypatch.setattr(demo_corpus, "build_corpus", lambda *a, **k: pytest.fail("rendered twice"))
    assert demo_corpus.ensure_corpus(tmp_path / "fp", base, demo) == corpus
    # the corpus is part of the crawl's fingerprint: other demo params are another crawl
    crawl = crawl_stage.Crawl()
    one = crawl_stage.fingerprint(base, crawl, None, demo_corpus.corpus_identity(None, demo))
    two = crawl_stage.fingerprint(base, crawl, None, demo_corpus.corpus_identity(None, Demo(**{**TINY_DEMO,
                                                                                                "n_per_class": 9})))
    assert one != two


@pytest.mark.browser
def test_local_engine_renders_crawls_and_rows_carry_truth(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    params = write_params(tmp_path)
    crawl_stage.main(["--params", str(params), "--out", "data/raw", "--work", ".kiln/crawl"])
    out = capsys.readouterr().out
    assert "demo: 44 items (16 pots, 4 distractors, 24 junk)" in out
    assert not Path("data/demo").exists() and not list(Path(".kiln/crawl").iterdir())   # work dir removed
    rows = [json.loads(line) for line in open("data/raw/manifest.jsonl")]
    assert rows and all(row["truth"] is not None for row in rows)
    pots = [r for r in rows if r["truth"]["kind"] == "pot"]
    assert len(pots) == 16
    assert all(sorted(r["factors"]) == sorted(FACTOR_NAMES) and len(r["fields"]) == 69 for r in pots)
    assert all(r["factors"] is None for r in rows if r["truth"]["kind"] != "pot")
    assert len([r for r in rows if r["truth"]["kind"] == "distractor"]) == 4
    junk = {r["truth"]["junk"] for r in rows if r["truth"]["kind"] == "junk"}
    # what survives the crawl's own checks (tiny, odd_aspect, truncated, not_image do not; exact
    # duplicates are the pots' bytes)
    assert junk == {"near_duplicate", "blank", "dark", "light", "blurry", "low_information", "grayscale"}
    # downloads are stored byte for byte: the same render has every kept file but the re-encoded grey one
    from stages.demo.__main__ import build_corpus
    build_corpus(tmp_path / "again", Base(seed=5), Demo(**TINY_DEMO), workers=1)
    rendered = {hashlib.sha256(p.read_bytes()).hexdigest() for p in (tmp_path / "again/files").iterdir()}
    assert {r["sha256"] for r in rows if r["truth"]["junk"] != "grayscale"} <= rendered
