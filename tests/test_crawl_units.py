"""Pure crawl workers: URL safety, engine definitions, full-URL extraction, image checks, journal."""
from __future__ import annotations

import asyncio
import struct
import zlib
from pathlib import Path

import pytest

from crawl_fakes import jpeg_bytes, noisy_jpeg, png_bytes
from stages.crawl.engines import BUILTIN
from stages.crawl.engines import extract_full_url
from stages.crawl.engines import page_url
from stages.crawl.engines import resolve_engine
from stages.crawl.engines import search_url
from stages.crawl.fetch.download import HostGate
from stages.crawl.fetch.images import Limits, Rejected, check_image, content_type_ok
from stages.crawl.fetch.journal import Journal, work_dir
from stages.crawl.fetch.safety import Policy, UnsafeURL, check_url
from stages.crawl.config import Crawl, FullUrl
from stages.common.schema import ParamsError
from stages.common.schema import from_dict

FIXTURES = Path(__file__).parent / "fixtures" / "engines"
LIMITS = Limits(("image/jpeg", "image/png", "image/webp"), max_pixels=4_000_000, min_side=32)


def fake_dns(table):
    return lambda host, port: table[host]


# --- URL safety ---------------------------------------------------------------
@pytest.mark.parametrize("url, why", [
    ("ftp://example.com/a.jpg", "scheme"),
    ("file:///etc/passwd", "scheme"),
    ("javascript:alert(1)", "scheme"),
    ("http://user:pw@example.com/a.jpg", "credentials"),
    ("http://127.0.0.1/a.jpg", "non-public address 127.0.0.1"),
    ("http://[::1]/a.jpg", "non-public address ::1"),
    ("http://10.1.2.3/a.jpg", "non-public"),
    ("http://192.168.0.5:8080/a.jpg", "non-public"),
    ("http://169.254.169.254/latest/meta-data", "non-public"),   # cloud metadata, link-local
    ("http://[::ffff:127.0.0.1]/a.jpg", "non-public"),
    ("http://0.0.0.0/a.jpg", "non-public"),
    ("http://rebind.example/a.jpg", "non-public address 10.0.0.7"),
])
def test_unsafe_urls_are_refused_with_a_reason(url, why):
    policy = Policy(resolve=fake_dns({"rebind.example": ["93.184.216.34", "10.0.0.7"]}))
    with pytest.raises(UnsafeURL, match=why.split(" address")[0]):
        check_url(url, policy)


def test_public_url_pins_the_checked_address():
    policy = Policy(resolve=fake_dns({"images.example": ["93.184.216.34"]}))
    target = check_url("https://images.example/p/a.jpg", policy)
    assert (target.host, target.port, target.address) == ("images.example", 443, "93.184.216.34")


def test_local_engine_and_trusted_hosts_may_be_private():
    assert check_url("http://127.0.0.1:5000/a.png", Policy(allow_private=True)).address is None
    trusted = Policy(trusted_hosts=frozenset({"search.intranet"}), resolve=fake_dns({}))
    assert check_url("http://search.intranet/a.png", trusted).address is None
    with pytest.raises(UnsafeURL):   # trust is per host name, not for any private address
        check_url("http://127.0.0.1/a.png", trusted)


# --- engines --------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_builtin_engines_parse_and_build_search_urls(name):
    engine = resolve_engine(from_dict(Crawl, {"engine": name, "queries": [{"term": "x", "class": "bowl"}]}))
    url = search_url(engine, "blue bowl", "http://127.0.0.1:1")
    assert "blue+bowl" in url and url.startswith("http")


def test_user_engines_are_data_and_shadow_builtins():
    user = {"search_url": "https://stock.example/s?q={query}", "result": "figure a",
            "full_url": {"attribute": "data-full"}, "more": "pages",
            "page_url": "https://stock.example/s?q={query}&page={page}", "page_size": 20}

    def crawl(engine):
        return from_dict(Crawl, {"engine": engine, "engines": {"stock": user, "bing": user},
                                 "queries": [{"term": "pot", "class": "bowl"}]}, "crawl")
    engine = resolve_engine(crawl("stock"))
    assert engine.result == "figure a"
    assert page_url(engine, "red pot", 2) == "https://stock.example/s?q=red+pot&page=3"
    assert resolve_engine(crawl("bing")).result == "figure a"
    with pytest.raises(ParamsError, match="allowed: bing, duckduckgo, folder, google, local, stock"):
        resolve_engine(crawl("yahoo"))


@pytest.mark.parametrize("data, path", [
    ({"queries": [{"term": "a", "klass": "bowl"}]}, "crawl.queries.0.klass"),
    ({"queries": [{"term": "a"}]}, "crawl.queries.0.class"),
    ({"queries": [{"term": "a", "class": 3}]}, "crawl.queries.0.class"),
    ({"queries": [{"term": "a", "class": "b", "count": 0}]}, "crawl.queries.0.count"),
    ({"queries": []}, "crawl.queries"),
    ({"engine": "folder"}, "crawl.folder"),
    ({"queries": [{"term": "a", "class": "b"}], "engines": {"local": {"search_url": "https://x/?q={query}",
                                                                     "result": "a"}}}, "crawl.engines.local"),
    ({"queries": [{"term": "a", "class": "b"}], "allowed_types": ["image/svg+xml"]}, "crawl.allowed_types.0"),
    ({"queries": [{"term": "a", "class": "b"}], "engines": {"x": {"search_url": "https://x/", "result": "a"}}},
     "crawl.engines.x.search_url"),
])
def test_bad_crawl_params_name_their_key(data, path):
    with pytest.raises(ParamsError) as err:
        from_dict(Crawl, data, "crawl")
    assert err.value.path == path


# --- full-size URL extraction, on attribute values from the saved pages ---------------
def test_bing_json_attribute_from_saved_page():
    text = (FIXTURES / "bing.html").read_text()
    start = text.index(' m="') + 4
    raw = text[start:text.index('"', start)].replace("&quot;", '"').replace("&amp;", "&")
    spec = FullUrl(attribute="m", json_key="murl")
    assert extract_full_url(raw, spec, "https://www.bing.com/images/search?q=bowl") == \
        "https://pottery.example.org/images/celadon-bowl-1.jpg"


@pytest.mark.parametrize("raw, spec, expected", [
    ('{"murl": "/full/a.png"}', FullUrl("m", "murl"), "https://e.example/full/a.png"),
    ('{"a": {"b": ["x", "https://i.example/b.jpg"]}}', FullUrl("m", "a.b.1"), "https://i.example/b.jpg"),
    ('{"murl": 5}', FullUrl("m", "murl"), None),
    ("{not json", FullUrl("m", "murl"), None),
    ("", FullUrl("m", "murl"), None),
    ("/imgres?imgurl=https%3A%2F%2Fi.example%2Fc.jpg&w=1", FullUrl("href", "", "imgurl"),
     "https://i.example/c.jpg"),
    ("//external.example/iu/?u=https%3A%2F%2Fi.example%2Fd.jpg&f=1", FullUrl("data-src", "", "u"),
     "https://i.example/d.jpg"),
    ("/imgres?w=1", FullUrl("href", "", "imgurl"), None),
])
def test_extract_full_url(raw, spec, expected):
    assert extract_full_url(raw, spec, "https://e.example/search?q=x") == expected


# --- image checks ------------------------------------------------------------------
def huge_png_header(width=30000, height=30000) -> bytes:
    """A PNG whose header declares width x height (the bomb guard must stop at the header)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")


def test_rgb_png_is_kept_byte_exact_with_its_fields():
    body = png_bytes(fields=[1.0, 2.5])
    kept = check_image(body, LIMITS)
    assert (kept.data, kept.ext, kept.fields, kept.width) == (body, "png", [1.0, 2.5], 64)


def test_non_rgb_images_are_converted_to_rgb_png():
    kept = check_image(png_bytes(mode="L", color=(90,)), LIMITS)
    from PIL import Image
    import io
    assert kept.ext == "png" and Image.open(io.BytesIO(kept.data)).mode == "RGB"


@pytest.mark.parametrize("body, why", [
    (huge_png_header(), "decompression bomb|too many pixels"),
    (huge_png_header(3000, 3000), "too many pixels"),
    (png_bytes(size=(16, 64)), "too small"),
    (noisy_jpeg()[:2000], "corrupt image data"),
    (b"<!doctype html><title>x</title>", "not a decodable image"),
    (b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"/>', "not a decodable image"),
])
def test_bad_images_are_rejected_with_a_reason(body, why):
    with pytest.raises(Rejected, match=why):
        check_image(body, LIMITS)


def test_content_type_check():
    assert content_type_ok("image/JPEG; charset=binary", LIMITS) == "image/jpeg"
    for bad in ("text/html", "image/svg+xml", None):
        with pytest.raises(Rejected, match="content type"):
            content_type_ok(bad, LIMITS)
    assert check_image(jpeg_bytes(), LIMITS).ext == "jpg"


# --- journal and politeness -------------------------------------------------------------
def test_journal_survives_a_torn_line_and_a_missing_blob(tmp_path):
    journal = Journal(work_dir(tmp_path, "fp"))
    journal.put_blob("ab" * 32, "png", b"x")   # its hash does not match: must not count as done
    journal.append({"kind": "item", "key": "u1", "ok": True, "sha256": "ab" * 32, "ext": "png"})
    journal.append({"kind": "item", "key": "u2", "ok": False, "reason": "http 404"})
    journal.close()
    with open(journal.path, "ab") as fh:
        fh.write(b'{"kind": "item", "key": "u3", "ok": fa')   # a kill mid-line
    again = Journal(work_dir(tmp_path, "fp"))
    assert set(again.items) == {"u2"}
    again.append({"kind": "item", "key": "u4", "ok": False, "reason": "timeout"})
    again.close()
    assert set(Journal(tmp_path / "fp").items) == {"u2", "u4"}
    work_dir(tmp_path, "other")
    assert not (tmp_path / "fp").exists()   # a changed fingerprint drops the stale journal


def test_host_gate_spaces_request_starts():
    async def starts():
        gate, loop, times = HostGate(concurrency=8, rate=20.0), asyncio.get_running_loop(), []

        async def one():
            async with gate:
                times.append(loop.time())
        await asyncio.gather(*(one() for _ in range(5)))
        return sorted(times)
    times = asyncio.run(starts())
    # The n-th start never comes before n intervals (1/20 s) after the first; a late
    # wake-up may shorten one gap, never the schedule.
    assert all(t - times[0] >= n * 0.05 - 0.002 for n, t in enumerate(times))


def test_requests_go_to_the_checked_address_not_a_new_lookup():
    from stages.crawl.fetch.download import _pinned
    from stages.crawl.fetch.safety import Target

    url, headers, ext = _pinned(Target("https://img.example/p/a.jpg?x=1", "img.example", 443, "93.184.216.34"))
    assert (url, headers, ext) == ("https://93.184.216.34/p/a.jpg?x=1", {"Host": "img.example"},
                                   {"sni_hostname": "img.example"})   # TLS still checks img.example
    url, headers, _ = _pinned(Target("http://img.example:8080/a", "img.example", 8080, "2606:2800:220:1::1"))
    assert url == "http://[2606:2800:220:1::1]:8080/a" and headers == {"Host": "img.example:8080"}
    assert _pinned(Target("http://127.0.0.1:9/a", "127.0.0.1", 9, None)) == ("http://127.0.0.1:9/a", {}, {})
