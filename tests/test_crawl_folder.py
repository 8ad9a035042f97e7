"""engine: folder -> an existing <folder>/<class>/* tree, validated and deduped like downloads."""
from __future__ import annotations

import hashlib
import json

import pytest

from crawl_fakes import jpeg_bytes, noisy_jpeg, png_bytes, write_params
import stages.crawl.__main__ as crawl_stage
from stages.shared.packs import list_members, read_bytes


def test_folder_source(tmp_path, capsys):
    tree = tmp_path / "mine"
    (tree / "bowl").mkdir(parents=True)
    (tree / "vase").mkdir()
    good = jpeg_bytes()
    (tree / "bowl" / "a.jpg").write_bytes(good)
    (tree / "bowl" / "copy-of-a.jpg").write_bytes(good)
    (tree / "bowl" / "b.png").write_bytes(png_bytes(mode="L", color=(50,), fields=[3.0]))
    (tree / "bowl" / "notes.txt").write_text("not an image")
    (tree / "vase" / "broken.jpg").write_bytes(noisy_jpeg()[:1500])
    (tree / "vase" / "v.png").write_bytes(png_bytes(color=(0, 0, 200)))
    params = write_params(tmp_path / "params.yaml", {"engine": "folder", "folder": str(tree)})
    out = tmp_path / "raw"
    crawl_stage.main(["--params", str(params), "--out", str(out), "--work", str(tmp_path / "w")])

    rows = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    reasons = {json.loads(x)["source_url"].rsplit("/", 1)[1]: json.loads(x)["reason"]
               for x in (out / "failures.jsonl").read_text().splitlines()}
    assert sorted((r["class"], r["source_url"].rsplit("/", 1)[1]) for r in rows) == \
        [("bowl", "a.jpg"), ("bowl", "b.png"), ("vase", "v.png")]
    assert reasons["copy-of-a.jpg"].startswith("duplicate of")
    assert "content type 'text/plain'" in reasons["notes.txt"]
    assert reasons["broken.jpg"].startswith("corrupt image data")
    grey = next(r for r in rows if r["source_url"].endswith("b.png"))
    assert grey["fields"] == [3.0] and grey["engine"] == "folder" and grey["term"] is None
    for row in rows:
        assert hashlib.sha256(read_bytes(row["path"])).hexdigest() == row["sha256"]
    assert list_members(out) == sorted(row["path"] for row in rows)   # the packs hold the rows, nothing else
    assert "kept 3 images" in capsys.readouterr().out


def test_folder_without_a_class_directory_is_one_clear_error(tmp_path, capsys):
    (tmp_path / "mine" / "bowl").mkdir(parents=True)
    params = write_params(tmp_path / "params.yaml", {"engine": "folder", "folder": str(tmp_path / "mine")})
    with pytest.raises(SystemExit) as exit_info:
        crawl_stage.run_stage(crawl_stage.main, ["--params", str(params), "--out", str(tmp_path / "raw"),
                                                 "--work", str(tmp_path / "w")])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.strip().endswith("mine/vase is not a directory (one per class expected)")


def test_bad_params_exit_2_naming_the_key(tmp_path, capsys):
    params = write_params(tmp_path / "params.yaml", {"queries": [{"term": "cup", "class": "cup"}]})
    with pytest.raises(SystemExit) as exit_info:
        crawl_stage.run_stage(crawl_stage.main, ["--params", str(params), "--out", str(tmp_path / "raw")])
    assert exit_info.value.code == 2
    assert "crawl.queries.0.class: 'cup' is not in base.classes" in capsys.readouterr().err
