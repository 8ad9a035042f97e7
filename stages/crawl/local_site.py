"""The embedded local image-search engine over a demo corpus (stages/demo's output).

``LocalSite`` serves on 127.0.0.1 (a free port, a daemon thread):
  /search?q=TERM        results page; thumbnails arrive by JavaScript as the user
                        scrolls (/api/results), none is in the first HTML
  /api/results?q=&offset=   JSON page of results: view, thumbnail and full-size URLs
  /img/<file>           full-size image, misbehaving for a seeded fraction of items
  /file/<file>          the same bytes, always well-behaved (redirect targets, thumbnails)
A term maps to a class through the crawl queries, or when a class name is a word of
the term; the class's pots, distractors and junk come back in a seeded order.
"""
from __future__ import annotations

import hashlib
import html
import json
import mimetypes
import random
import re
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

from stages.common.io import read_jsonl

BEHAVIOURS = ("slow", "error", "flaky", "redirect", "wrong_type")
SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def behaviour_of(item_id: str, seed: int, knobs) -> str:
    """Which misbehaviour (or "ok") an item shows; a stable draw from (seed, id)."""
    draw = int(hashlib.sha256(f"{seed}:{item_id}".encode()).hexdigest()[:12], 16) / 16 ** 12
    edge = 0.0
    for name in BEHAVIOURS:
        edge += getattr(knobs, f"{name}_fraction")
        if draw < edge:
            return name
    return "ok"


def content_type_of(name: str) -> str:
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


class Corpus:
    """index.jsonl grouped by class; files looked up by base name under files/."""

    def __init__(self, demo_dir: Path, term_classes: dict[str, str], seed: int):
        self.files_dir = demo_dir / "files"
        self.seed = seed
        self.by_class: dict[str, list[dict]] = {}
        self.by_name: dict[str, dict] = {}
        for row in read_jsonl(demo_dir / "index.jsonl"):
            name = Path(row["file"]).name
            self.by_class.setdefault(row["class"], []).append(row)
            self.by_name[name] = row
        self.term_classes = {t.strip().lower(): c for t, c in term_classes.items()}

    def class_of(self, term: str) -> str | None:
        term = term.strip().lower()
        if term in self.term_classes:
            return self.term_classes[term]
        words = set(re.findall(r"[a-z0-9]+", term))
        return next((c for c in self.by_class if c.lower() in words), None)

    def results(self, term: str) -> list[dict]:
        """The term's class items in an order seeded by (seed, term): pots mixed with junk."""
        rows = list(self.by_class.get(self.class_of(term) or "", []))
        random.Random(f"{self.seed}:{term.strip().lower()}").shuffle(rows)
        return rows

    def path_of(self, name: str) -> Path | None:
        if not SAFE_NAME.match(name) or name not in self.by_name:
            return None
        path = self.files_dir / name
        return path if path.is_file() else None

# The results page: no image URL in this HTML; results arrive from /api/results as
# the page scrolls near its bottom, like the lazy grids of public image searches.
RESULTS_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>kiln search: {term_html}</title>
<style>#results{{display:flex;flex-wrap:wrap}} .kiln-result{{width:160px;height:160px;margin:4px}}
.kiln-result img{{width:150px;height:150px}}</style></head>
<body><form action="/search"><input name="q" value="{term_html}"></form>
<div id="results"></div><div id="sentinel">loading...</div>
<script>
const query = {term_json};
let offset = 0, busy = false, done = false;
function nearBottom() {{
  return window.innerHeight + window.scrollY >= document.body.scrollHeight - 400;
}}
async function more() {{
  if (busy || done) return;
  busy = true;
  const reply = await fetch('/api/results?q=' + encodeURIComponent(query) + '&offset=' + offset);
  const page = await reply.json();
  const box = document.getElementById('results');
  for (const item of page.items) {{
    const link = document.createElement('a');
    link.className = 'kiln-result';
    link.href = item.view;
    link.dataset.meta = JSON.stringify({{murl: item.murl, turl: item.turl, t: item.title}});
    const img = document.createElement('img');
    img.src = item.turl; img.alt = item.title;
    link.appendChild(img); box.appendChild(link);
  }}
  offset += page.items.length; done = page.done; busy = false;
  if (done) {{
    document.getElementById('sentinel').remove();
    const end = document.createElement('div');
    end.id = 'kiln-end'; end.textContent = 'no more results';
    document.body.appendChild(end);
  }} else if (nearBottom()) {{ more(); }}
}}
window.addEventListener('scroll', () => {{ if (nearBottom()) more(); }});
more();
</script></body></html>
"""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"   # keep-alive: one connection serves many images
    disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms stalls
    site: "LocalSite"

    def log_message(self, *args) -> None:   # quiet: the crawl has its own progress bar
        pass

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        route, _, rest = parts.path.lstrip("/").partition("/")
        handler = {"": self.home, "search": self.search, "api": self.api, "view": self.view,
                   "img": self.image, "hop": self.hop, "file": self.plain_file}.get(route)
        if handler is None:
            return self.send(HTTPStatus.NOT_FOUND, b"not found", "text/plain")
        handler(rest, query)

    def send(self, status: int, body: bytes, content_type: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def redirect(self, location: str) -> None:
        self.send(HTTPStatus.FOUND, b"", "text/plain", {"Location": location})

    def home(self, _rest: str, _query: dict) -> None:
        page = b'<!doctype html><form action="/search"><input name="q"></form>'
        self.send(HTTPStatus.OK, page, "text/html; charset=utf-8")

    def search(self, _rest: str, query: dict) -> None:
        term = query.get("q", "")
        page = RESULTS_PAGE.format(term_html=html.escape(term), term_json=json.dumps(term))
        self.send(HTTPStatus.OK, page.encode(), "text/html; charset=utf-8")

    def api(self, _rest: str, query: dict) -> None:
        rows = self.site.corpus.results(query.get("q", ""))
        offset = int(query["offset"]) if query.get("offset", "").isdigit() else 0
        chunk = rows[offset:offset + self.site.knobs.page_size]
        items = [self.site.describe(row) for row in chunk]
        body = json.dumps({"items": items, "done": offset + len(chunk) >= len(rows)}).encode()
        self.send(HTTPStatus.OK, body, "application/json")

    def view(self, name: str, _query: dict) -> None:
        page = f'<!doctype html><img src="/img/{quote(name)}">'.encode()
        self.send(HTTPStatus.OK, page, "text/html; charset=utf-8")

    def plain_file(self, name: str, _query: dict) -> None:
        path = self.site.corpus.path_of(name)
        if path is None:
            return self.send(HTTPStatus.NOT_FOUND, b"not found", "text/plain")
        self.send(HTTPStatus.OK, path.read_bytes(), content_type_of(name))

    def hop(self, rest: str, query: dict) -> None:
        """Redirect chain: /hop/<name>?n=1 -> /hop/<name>?n=2 -> /file/<name>."""
        if query.get("n") == "1":
            return self.redirect(f"/hop/{rest}?n=2")
        self.redirect(f"/file/{rest}")

    def image(self, name: str, query: dict) -> None:
        """The full-size image, misbehaving as the item's seeded behaviour says."""
        row = self.site.corpus.by_name.get(name)
        behaviour = behaviour_of(row["id"], self.site.seed, self.site.knobs) if row else "ok"
        if behaviour == "slow":
            time.sleep(self.site.knobs.slow_s)
        elif behaviour == "error":
            coin = hashlib.sha256(f"status:{row['id']}".encode()).digest()[0] % 2
            status = HTTPStatus.NOT_FOUND if coin else HTTPStatus.INTERNAL_SERVER_ERROR
            return self.send(status, b"error", "text/plain")
        elif behaviour == "flaky" and self.site.first_visit(name):
            return self.send(HTTPStatus.SERVICE_UNAVAILABLE, b"busy, try again", "text/plain")
        elif behaviour == "redirect":
            return self.redirect(f"/hop/{name}?n=1")
        path = self.site.corpus.path_of(name)
        if path is None:
            return self.send(HTTPStatus.NOT_FOUND, b"not found", "text/plain")
        kind = "text/html" if behaviour == "wrong_type" else content_type_of(name)
        self.send(HTTPStatus.OK, path.read_bytes(), kind)


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass   # a client that hangs up early (size cap, shutdown) is not the site's problem


class LocalSite:
    """Start with ``with LocalSite(...) as origin:``; serves until the block ends."""

    def __init__(self, demo_dir: Path, term_classes: dict[str, str], knobs, seed: int):
        self.corpus = Corpus(Path(demo_dir), term_classes, seed)
        self.knobs, self.seed = knobs, seed
        self.visited: set[str] = set()
        self.lock = threading.Lock()
        handler = type("SiteHandler", (Handler,), {"site": self})
        self.server = QuietServer(("127.0.0.1", 0), handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"

    def describe(self, row: dict) -> dict:
        name = quote(Path(row["file"]).name)
        return {"view": f"/view/{name}", "turl": f"/file/{name}", "murl": f"/img/{name}",
                "title": f"{row['class']} {row['id']}"}

    def first_visit(self, name: str) -> bool:
        with self.lock:
            first = name not in self.visited
            self.visited.add(name)
            return first

    def __enter__(self) -> str:
        threading.Thread(target=self.server.serve_forever, name="kiln-local-site", daemon=True).start()
        return self.origin

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
