"""Scroll-loaded sites whose results fit the window, and searches that end below their count.

With thumbnails off (``load_images: false``, the default) results collapse to a few pixels,
so a page of them fits the browser window: ``window.scrollTo`` moves nothing, no scroll
event fires and an intersection sentinel never changes state. The sites below load more
only on such a trigger (no self-chaining, unlike the embedded local site).
"""
from __future__ import annotations

import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from crawl_fakes import QUIET_LOCAL, make_corpus, write_params
import stages.crawl.__main__ as crawl_stage
from stages.common.schema import from_dict
from stages.crawl.config import Crawl, EngineDef
from stages.crawl.engines.browser import collect, open_browser
from stages.crawl.fetch.assemble import collect_outcome
from stages.crawl.fetch.journal import Journal, work_dir

PAGES, PER_PAGE = 5, 6

# How each site asks for the next page: a window scroll handler that checks it is near the
# bottom; an IntersectionObserver on a sentinel after the results (never re-observed); a
# results pane with its own scrollbar and a scroll handler on it.
TRIGGERS = {
    "scroll": """
      window.addEventListener('scroll', () => {
        const root = document.scrollingElement;
        if (window.innerHeight + window.scrollY >= root.scrollHeight - 200) more();
      });
      more();""",
    "observer": """
      new IntersectionObserver(entries => { if (entries.some(e => e.isIntersecting)) more(); })
        .observe(document.getElementById('sentinel'));""",
    "pane": """
      const pane = document.getElementById('pane');
      pane.addEventListener('scroll', () => {
        if (pane.scrollTop + pane.clientHeight >= pane.scrollHeight - 100) more();
      });
      more();""",
}

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>scroll site</title>
<style>body{{margin:8px}} a.hit{{display:inline-block;width:18px;height:18px;margin:1px}}
#pane{{height:300px;overflow:auto;border:1px solid #888}}</style></head><body>
<div id="pane"><div id="results"></div><div id="sentinel">loading...</div></div>
<script>
let page = 0, busy = false, done = false;
async function more() {{
  if (busy || done) return;
  busy = true;
  const reply = await fetch('/api?page=' + page);
  const data = await reply.json();
  const box = document.getElementById('results');
  for (const name of data.items) {{
    const link = document.createElement('a');
    link.className = 'hit';
    link.dataset.full = '/full/' + name;
    const thumb = document.createElement('img');
    thumb.src = '/thumb/' + name;   // blocked with load_images: false (and 404 anyway)
    link.appendChild(thumb);
    box.appendChild(link);
  }}
  page += 1; done = data.done; busy = false;
  if (done) {{
    const end = document.createElement('div');
    end.id = 'the-end'; end.textContent = 'no more results';
    document.body.appendChild(end);
  }}
}}
{trigger}
</script></body></html>
"""


class Site(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        name = parts.path.strip("/").removesuffix(".html")
        if name in TRIGGERS:
            body, kind = PAGE.format(trigger=TRIGGERS[name]).encode(), "text/html; charset=utf-8"
        elif name == "api":
            page = int(parse_qs(parts.query).get("page", ["0"])[0])
            items = [f"p{page}-{i}.jpg" for i in range(PER_PAGE)] if page < PAGES else []
            body, kind = json.dumps({"items": items, "done": page + 1 >= PAGES}).encode(), "application/json"
        else:
            body, kind = b"not found", "text/plain"
        self.send_response(HTTPStatus.OK if kind != "text/plain" else HTTPStatus.NOT_FOUND)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def site():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Site)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.browser
def test_scroll_loaded_site_whose_results_fit_the_window_is_crawled_whole(site):
    crawl = from_dict(Crawl, {"queries": [{"term": "pot", "class": "bowl"}], "scroll_wait_s": 1.0,
                              "scroll_patience": 2}, "crawl")
    assert crawl.load_images is False   # the default the bug report ran with
    expected = [f"{site}/full/p{p}-{i}.jpg" for p in range(PAGES) for i in range(PER_PAGE)]
    with open_browser(crawl) as driver:
        for name in TRIGGERS:
            engine = from_dict(EngineDef, {"search_url": f"{{origin}}/{name}.html?q={{query}}",
                                           "result": "a.hit", "full_url": {"attribute": "data-full"},
                                           "more": "scroll", "end_selector": "#the-end"}, "engine")
            found = collect(driver, engine, "pot", 100, crawl, site)
            fits = driver.execute_script("return document.scrollingElement.scrollHeight <= window.innerHeight;")
            assert fits, name   # even every result together fits the window: nothing could scroll
            assert found.urls == expected, f"{name}: found {len(found.urls)} of {len(expected)}"
            assert found.missing == 0
            capped = collect(driver, engine, "pot", 8, crawl, site)
            assert capped.urls == expected[:8], name   # count is still honoured


@pytest.mark.browser
def test_search_short_of_its_count_warns_once_and_is_summarised(tmp_path, capsys):
    make_corpus(tmp_path / "demo", per_class=3)   # 8 results per class: 3 pots, distractor, 4 junk
    params = write_params(tmp_path / "params.yaml", {
        "queries": [{"term": "bowl", "class": "bowl", "count": 50},
                    {"term": "vase", "class": "vase", "count": 3}],
        "per_host_rate": 0, "backoff_s": 0.05, "scroll_wait_s": 1.0,
        "local": {**QUIET_LOCAL, "page_size": 3}})
    out = tmp_path / "raw"
    crawl_stage.main(["--params", str(params), "--demo", str(tmp_path / "demo"),
                      "--out", str(out), "--work", str(tmp_path / "work")])
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if line.startswith("kiln: warning:")]
    assert warnings == ["kiln: warning: crawl: term 'bowl' (class bowl): found 8 of 50 requested on "
                        "local (the engine showed its end of results)"]
    assert "1 of 2 searches short of their count" in captured.out

    summary = json.loads((out / "summary.json").read_text())
    bowl, vase = summary["searches"]
    assert (bowl["term"], bowl["class"], bowl["engine"]) == ("bowl", "bowl", "local")
    assert (bowl["requested"], bowl["found"], bowl["short"]) == (50, 8, True)
    assert (bowl["kept"], bowl["duplicates"], bowl["failed_downloads"]) == (4, 1, 3)
    assert (vase["requested"], vase["found"], vase["short"], vase["stopped"]) == (3, 3, False, "count reached")
    assert summary["short"] == 1
    rows = (out / "manifest.jsonl").read_text().splitlines()
    assert summary["kept"] == len(rows) == bowl["kept"] + vase["kept"]


def test_short_searches_from_a_journal(tmp_path):
    """Without a browser: the warning and the summary row come from the journal's search."""
    journal = Journal(work_dir(tmp_path / "work", "fp"))
    journal.append({"kind": "search", "term": "celadon bowl", "class": "bowl", "missing": 2,
                    "error": None, "page_url": "https://e.example/s?q=celadon", "urls": [],
                    "requested": 243, "stopped": "no new results after 2 scrolls"})
    journal.append({"kind": "search", "term": "", "class": "cup", "missing": 0, "error": None,
                    "page_url": "folder/cup", "urls": []})   # folder engine: no count asked
    outcome = collect_outcome(journal, [("celadon bowl", "bowl"), ("", "cup")],
                              "bing", tmp_path / "raw", lambda k: k)
    journal.close()
    assert crawl_stage.short_search_warnings(outcome) == [
        "kiln: warning: crawl: term 'celadon bowl' (class bowl): found 0 of 243 requested on bing "
        "(no new results after 2 scrolls)"]
    first = outcome.searches[0]
    assert (first["requested"], first["found"], first["without_full_url"], first["short"]) == (243, 0, 2, True)
    assert [s["short"] for s in outcome.searches] == [True, False]
