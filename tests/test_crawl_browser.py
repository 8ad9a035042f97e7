"""The crawl through real headless Chromium: the local engine end to end, saved public pages."""
from __future__ import annotations

import functools
import hashlib
import json
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from crawl_fakes import QUIET_LOCAL, make_corpus, write_params
import stages.crawl.__main__ as crawl_stage
from stages.crawl.local_site import LocalSite
from stages.crawl.engines import BUILTIN
from stages.crawl.engines.browser import collect, open_browser
from stages.crawl.fetch.assemble import reason_kind
from stages.crawl.config import Crawl, EngineDef, LocalSite as Knobs
from stages.common.schema import from_dict
from stages.shared.packs import packed_path, read_bytes

FIXTURES = Path(__file__).parent / "fixtures" / "engines"


def test_results_page_has_no_image_url_until_scripts_ask(tmp_path):
    make_corpus(tmp_path / "demo", per_class=3)
    with LocalSite(tmp_path / "demo", {"big bowls": "bowl"}, Knobs(**QUIET_LOCAL), seed=1) as origin:
        page = httpx.get(f"{origin}/search", params={"q": "big bowls"}).text
        assert "/img/" not in page and "/file/" not in page and ".png" not in page
        first = httpx.get(f"{origin}/api/results", params={"q": "big bowls", "offset": 0}).json()
        vases = httpx.get(f"{origin}/api/results", params={"q": "a tall vase"}).json()
        nothing = httpx.get(f"{origin}/api/results", params={"q": "teapot"}).json()
        escape = httpx.get(f"{origin}/file/..%2Findex.jsonl")
    assert len(first["items"]) == 3 + 5 and first["done"]          # pots, distractor, 4 junk
    assert all(i["title"].startswith("bowl") for i in first["items"])
    assert all(i["title"].startswith("vase") for i in vases["items"])  # class name inside the term
    assert nothing == {"items": [], "done": True}
    assert escape.status_code == 404


@pytest.mark.browser
def test_local_engine_end_to_end(tmp_path, capsys):
    make_corpus(tmp_path / "demo", per_class=6)
    knobs = {**QUIET_LOCAL, "redirect_fraction": 0.3, "flaky_fraction": 0.3, "page_size": 4}
    params = write_params(tmp_path / "params.yaml", {
        "queries": [{"term": "bowl", "class": "bowl", "count": 50},
                    {"term": "tall vase", "class": "vase", "count": 5}],
        "per_host_rate": 0, "backoff_s": 0.05, "scroll_wait_s": 1.0, "local": knobs})
    out, work = tmp_path / "raw", tmp_path / "work"
    crawl_stage.main(["--params", str(params), "--demo", str(tmp_path / "demo"),
                      "--out", str(out), "--work", str(work)])

    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    bowls = [r for r in rows if r["class"] == "bowl"]
    assert len(bowls) == 7 and len([r for r in rows if r["class"] == "vase"]) <= 5  # count honoured
    assert sorted(r["fields"][1] for r in bowls if r["fields"]) == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    for row in rows:
        assert row["path"] == packed_path(out, row["class"], row["sha256"], Path(row["path"]).suffix)
        assert hashlib.sha256(read_bytes(row["path"])).hexdigest() == row["sha256"]
        assert row["engine"] == "local" and row["term"] in ("bowl", "tall vase")
        assert "/search?q=" in row["page_url"] and "/img/" in row["source_url"]
    bowl_reasons = sorted(reason_kind(f["reason"]) for f in failures if f["class"] == "bowl")
    assert bowl_reasons == ["corrupt image data", "duplicate", "not a decodable image", "too small"]
    assert not any(work.iterdir())   # the journal is removed once data/raw is whole
    assert capsys.readouterr().out.startswith("crawl: kept ")


SAVED_PAGES = {
    "bing": (["https://pottery.example.org/images/celadon-bowl-1.jpg",
              "https://museum.example.net/media/42/large.png",
              "https://shop.example.com/p/bowl-3.webp"], 1),       # third arrives on scroll
    "duckduckgo": (["https://tse3.mm.bing.net/th?id=OIP.vase1&pid=Api",
                    "https://images.example.net/vase-2.jpg"], 1),
    "google": (["https://www.example.edu/collection/amphora.jpg",
                "http://vases.example.com/img/red-figure.png"], 0),
}


USER_ENGINES = {   # user-defined engines (as in params.yaml crawl.engines) and what they must find
    "pages": ({"search_url": "{origin}/user-pages-1.html?q={query}", "result": "a.hit",
               "full_url": {"attribute": "data-full"}, "more": "pages",
               "page_url": "{origin}/user-pages-{page}.html?q={query}"},
              ["p1-a.jpg", "p1-b.jpg", "shared.jpg", "p2-a.jpg", "p2-b.jpg"], 0),
    "button": ({"search_url": "{origin}/user-button.html?q={query}", "result": "li.hit",
                "full_url": {"attribute": "data-json", "json_key": "file.url"}, "more": "button",
                "more_selector": "#more"},
               ["b0.png", "b1-0.png", "b1-1.png", "b2-0.png", "b2-1.png", "b3-0.png", "b3-1.png"], 0),
}


@pytest.mark.browser
def test_builtin_engine_definitions_on_saved_pages():
    quiet = type("Quiet", (SimpleHTTPRequestHandler,), {"log_message": lambda *a: None})
    handler = functools.partial(quiet, directory=str(FIXTURES))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    crawl = from_dict(Crawl, {"queries": [{"term": "x", "class": "bowl"}], "scroll_wait_s": 0.5,
                              "scroll_patience": 1})
    try:
        with open_browser(crawl) as driver:
            for name, (expected, missing) in SAVED_PAGES.items():
                definition = {**BUILTIN[name],
                              "search_url": f"http://127.0.0.1:{server.server_address[1]}/{name}.html?q={{query}}"}
                found = collect(driver, from_dict(EngineDef, definition), "bowl", 10, crawl)
                assert (found.urls, found.missing) == (expected, missing), name
            origin = f"http://127.0.0.1:{server.server_address[1]}"
            for name, (definition, expected, missing) in USER_ENGINES.items():
                found = collect(driver, from_dict(EngineDef, definition), "pot", 20, crawl, origin)
                assert [u.rsplit("/", 1)[1] for u in found.urls] == expected, name
                assert found.missing == missing
            capped = collect(driver, from_dict(EngineDef, USER_ENGINES["button"][0]), "pot", 3, crawl, origin)
            assert len(capped.urls) == 3   # count is honoured
    finally:
        server.shutdown()
        server.server_close()


def test_missing_chromium_says_how_to_install(tmp_path, monkeypatch, capsys):
    make_corpus(tmp_path / "demo", per_class=1)
    params = write_params(tmp_path / "params.yaml", {"queries": [{"term": "bowl", "class": "bowl"}]})
    monkeypatch.setenv("KILN_CHROMIUM", str(tmp_path / "no-such-chromium"))
    with pytest.raises(SystemExit) as exit_info:
        crawl_stage.run_stage(crawl_stage.main, ["--params", str(params), "--demo", str(tmp_path / "demo"),
                                                 "--out", str(tmp_path / "raw"), "--work", str(tmp_path / "w")])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 1 and len(err.splitlines()) == 1
    assert "apt-get install chromium chromium-driver" in err
    assert not (tmp_path / "raw").exists()
