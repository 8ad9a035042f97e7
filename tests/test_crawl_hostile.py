"""The downloader against a hostile server: every bad answer is logged, nothing bad is kept.

The search step is replaced by a journal entry listing the hostile URLs (the browser
is covered in test_crawl_browser.py); from there on this is the stage's own code path:
download_all -> collect_outcome -> write_raw.
"""
from __future__ import annotations

import asyncio
import hashlib
import io
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from crawl_fakes import bomb_png, noisy_jpeg, png_bytes
from stages.crawl.__main__ import UrlKeys, download_all, pending_jobs
from stages.crawl.fetch.assemble import collect_outcome, write_raw
from stages.crawl.fetch.journal import Journal, work_dir
from stages.crawl.fetch.safety import Policy
from stages.crawl.config import Crawl
from stages.common.schema import from_dict
from stages.shared.packs import list_members, read_bytes

BIG = 200 * 1024 * 1024
GOOD = png_bytes(color=(1, 2, 3))
FLAKY = png_bytes(color=(4, 5, 6))
SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"><rect width="64" height="64"/></svg>'


class Hostile(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    routes: dict
    log: list
    sent_big: list

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.log.append(self.path)
        route = self.routes.get(self.path.split("?")[0])
        if route is None:
            return self.reply(404, b"no", "text/plain")
        route(self)

    def reply(self, status, body, kind, headers=()):
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for key, value in headers:
            self.send_header(key, value)
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass   # the crawl hung up (a timeout we provoked): nothing to report

    def stream_big(self, declare_length: bool):
        """200 MB from one 64 KiB buffer; stops when the client hangs up."""
        block, sent = b"\xff" * 65536, 0
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        if declare_length:
            self.send_header("Content-Length", str(BIG))
        self.send_header("Connection", "close")
        self.end_headers()
        try:
            while sent < BIG:
                self.wfile.write(block)
                sent += len(block)
        except OSError:
            pass
        self.sent_big.append(sent)
        self.close_connection = True


def hostile_routes(port: int, bomb: bytes) -> dict:
    flaky_seen = []

    def flaky(h):
        if not flaky_seen:
            flaky_seen.append(1)
            return h.reply(503, b"busy", "text/plain")
        h.reply(200, FLAKY, "image/png")

    return {
        "/ok.png": lambda h: h.reply(200, GOOD, "image/png"),
        "/dup.png": lambda h: h.reply(200, GOOD, "image/png"),
        "/flaky.png": flaky,
        "/slow.jpg": lambda h: (time.sleep(3), h.reply(200, GOOD, "image/png")),
        "/404.jpg": lambda h: h.reply(404, b"gone", "text/plain"),
        "/500.jpg": lambda h: h.reply(500, b"oops", "text/plain"),
        "/loop-a.jpg": lambda h: h.reply(302, b"", "text/plain", [("Location", "/loop-b.jpg")]),
        "/loop-b.jpg": lambda h: h.reply(302, b"", "text/plain", [("Location", "/loop-a.jpg")]),
        "/html.jpg": lambda h: h.reply(200, b"<!doctype html><script>alert(1)</script>", "image/jpeg"),
        "/wrong-type.png": lambda h: h.reply(200, GOOD, "text/html"),
        "/truncated.jpg": lambda h: h.reply(200, noisy_jpeg()[:2500], "image/jpeg"),
        "/bomb.png": lambda h: h.reply(200, bomb, "image/png"),
        "/image.svg": lambda h: h.reply(200, SVG, "image/svg+xml"),
        "/svg-as.png": lambda h: h.reply(200, SVG, "image/png"),
        "/big.jpg": lambda h: h.stream_big(declare_length=True),
        "/big-chunked.jpg": lambda h: h.stream_big(declare_length=False),
        "/to-loopback.png": lambda h: h.reply(302, b"", "text/plain",
                                              [("Location", f"http://127.0.0.1:{port}/secret.png")]),
        "/secret.png": lambda h: h.reply(200, png_bytes(color=(9, 9, 9)), "image/png"),
        "/ftp.png": lambda h: h.reply(302, b"", "text/plain", [("Location", "ftp://localhost/x.png")]),
    }


EXPECTED_FAILURES = {
    "/slow.jpg": "timeout", "/404.jpg": "http 404", "/500.jpg": "http 500",
    "/loop-a.jpg": "redirect loop", "/html.jpg": "not a decodable image",
    "/wrong-type.png": "content type 'text/html' not allowed", "/truncated.jpg": "corrupt image data",
    "/bomb.png": "decompression bomb", "/image.svg": "content type 'image/svg+xml' not allowed",
    "/svg-as.png": "not a decodable image", "/big.jpg": "too large: Content-Length",
    "/big-chunked.jpg": "too large: body passed", "/to-loopback.png": "unsafe URL: non-public address 127.0.0.1",
    "/ftp.png": "unsafe URL: scheme 'ftp'", "/dup.png": "duplicate of",
}
KEPT = {"/ok.png": GOOD, "/flaky.png": FLAKY}


@pytest.fixture(scope="module")
def hostile_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hostile)
    server.daemon_threads = True
    port = server.server_address[1]
    log, sent_big = [], []
    server.RequestHandlerClass = type("H", (Hostile,), {"routes": hostile_routes(port, bomb_png()),
                                                         "log": log, "sent_big": sent_big})
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield port, log, sent_big
    server.shutdown()
    server.server_close()


def test_hostile_server(hostile_server, tmp_path):
    port, log, sent_big = hostile_server
    # A non-local engine: it trusts the name "localhost" (as a user would trust an intranet
    # host), so the redirect to 127.0.0.1 must still be refused.
    crawl = from_dict(Crawl, {"engine": "hostile", "queries": [{"term": "pot", "class": "bowl"}],
                              # timeout well under slow.jpg's 3 s, with room for a loaded CI box;
                              # two retries so /flaky.png's one 503 cannot exhaust them
                              "timeout_s": 1.0, "retries": 2, "backoff_s": 0.05, "max_bytes": 5_000_000,
                              "per_host_rate": 0, "per_host_concurrency": 8}, "crawl")
    origin = f"http://localhost:{port}"
    paths = [*KEPT, *EXPECTED_FAILURES]
    journal = Journal(work_dir(tmp_path / "work", "fp"))
    journal.append({"kind": "search", "term": "pot", "class": "bowl", "missing": 0, "error": None,
                    "page_url": f"{origin}/search?q=pot", "urls": [origin + p for p in paths]})
    keys, policy = UrlKeys(), Policy(trusted_hosts=frozenset({"localhost"}))
    started = time.monotonic()
    asyncio.run(download_all(pending_jobs(journal, keys), crawl, policy, journal, keys))
    assert time.monotonic() - started < 20
    out = tmp_path / "raw"
    outcome = collect_outcome(journal, [("pot", "bowl")], "hostile", out, keys.expand)
    write_raw(outcome, out, ["bowl", "vase"])

    reasons = {f["source_url"][len(origin):]: f["reason"] for f in outcome.failures}
    assert set(reasons) == set(EXPECTED_FAILURES)
    for path, why in EXPECTED_FAILURES.items():
        assert why in reasons[path], (path, reasons[path])
    kept = {r["source_url"][len(origin):]: r for r in outcome.rows}
    assert set(kept) == set(KEPT)
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.suffix != ".zip")
    assert {p.name for p in files} == {"manifest.jsonl", "failures.jsonl", "summary.json"}
    images = list_members(out)
    assert {Path(p).name for p in images} == {f"{hashlib.sha256(body).hexdigest()}.png" for body in KEPT.values()}
    for path in images:
        data = read_bytes(path)
        assert hashlib.sha256(data).hexdigest() == Path(path).stem
        assert Image.open(io.BytesIO(data)).size == (64, 64)
    assert not any("secret" in p for p in log)          # refused before connecting
    assert sent_big and max(sent_big) < 50 * 1024 * 1024  # the 200 MB body was abandoned early
