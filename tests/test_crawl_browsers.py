"""``crawl.browsers``: several Chromium sessions search terms at once; what the crawl finds
and writes is the same as with one."""
from __future__ import annotations

import contextlib
import json
import threading
import time

import pytest

from crawl_fakes import QUIET_LOCAL, make_corpus, write_params
import stages.crawl.__main__ as crawl_stage
from stages.common.schema import from_dict
from stages.crawl.config import Crawl


class FakeJournal:
    def __init__(self):
        self.searches: dict = {}

    def append(self, record: dict) -> None:
        self.searches[(record["term"], record["class"])] = record


def queries(n: int) -> list[dict]:
    return [{"term": f"bowl {k}", "class": "bowl", "count": 1} for k in range(n)]


def fake_browsers(monkeypatch, fail_on: str | None = None) -> dict:
    """open_browser and _search replaced: counts sessions, sessions at once, terms searched."""
    seen = {"opened": 0, "at_once": 0, "now": 0, "terms": []}
    lock = threading.Lock()

    @contextlib.contextmanager
    def open_browser(crawl):
        with lock:
            seen["opened"] += 1
            seen["now"] += 1
            seen["at_once"] = max(seen["at_once"], seen["now"])
        try:
            yield object()
        finally:
            with lock:
                seen["now"] -= 1

    def search(driver, engine, query, crawl, keys):
        time.sleep(0.05)          # a search waits on the page, not the CPU
        if query.term == fail_on:
            raise RuntimeError("browser crashed")
        with lock:
            seen["terms"].append(query.term)
        return {"kind": "search", "term": query.term, "class": query.cls, "urls": []}

    monkeypatch.setattr(crawl_stage, "open_browser", open_browser)
    monkeypatch.setattr(crawl_stage, "_search", search)
    return seen


@pytest.mark.parametrize("browsers, expected", [(1, 1), (3, 3), (8, 5)])
def test_each_term_searched_once_on_at_most_n_browsers(monkeypatch, browsers, expected):
    seen = fake_browsers(monkeypatch)
    crawl = from_dict(Crawl, {"queries": queries(5), "browsers": browsers})
    journal = FakeJournal()
    crawl_stage.search_all(journal, None, crawl, crawl_stage.UrlKeys())
    assert sorted(seen["terms"]) == sorted(q["term"] for q in queries(5))
    assert seen["opened"] == expected and seen["at_once"] <= expected
    assert len(journal.searches) == 5


def test_a_failing_browser_stops_the_others_and_raises(monkeypatch):
    seen = fake_browsers(monkeypatch, fail_on="bowl 0")
    crawl = from_dict(Crawl, {"queries": queries(40), "browsers": 2})
    with pytest.raises(RuntimeError, match="browser crashed"):
        crawl_stage.search_all(FakeJournal(), None, crawl, crawl_stage.UrlKeys())
    assert len(seen["terms"]) < 39      # the other session stopped early
    assert seen["now"] == 0             # every session closed


def test_browsers_is_a_speed_knob():
    """A crawl killed with one browser resumes with two: the count is not in the fingerprint."""
    assert "browsers" in crawl_stage.SPEED_KNOBS


@pytest.mark.browser
def test_two_browsers_write_what_one_writes(tmp_path):
    make_corpus(tmp_path / "demo", per_class=6)
    outputs = {}
    for browsers in (1, 2):
        params = write_params(tmp_path / f"params{browsers}.yaml", {
            "queries": [{"term": "bowl", "class": "bowl", "count": 50},
                        {"term": "tall vase", "class": "vase", "count": 50}],
            "browsers": browsers, "per_host_rate": 0, "scroll_wait_s": 0.5,
            "local": {**QUIET_LOCAL, "page_size": 4}})
        out = tmp_path / f"raw{browsers}"
        crawl_stage.main(["--params", str(params), "--demo", str(tmp_path / "demo"),
                          "--out", str(out), "--work", str(tmp_path / f"work{browsers}")])
        rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
        outputs[browsers] = [(r["sha256"], r["class"], r["term"]) for r in rows]
    assert outputs[2] == outputs[1] and len(outputs[1]) >= 10
