"""Crawl engines as data: built-in definitions plus the ones a user writes in params.

An engine is an ``EngineDef`` (stages/params.py): a search URL template, how to reach
more results, the CSS selector of one result and where that result keeps its
full-size image URL. Public engines change their markup often and cannot be reached
from the build machine: ``bing``, ``duckduckgo`` and ``google`` below were only checked
against saved pages (tests/fixtures/engines/), never against the live sites.
"""
from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, quote_plus, urljoin, urlsplit

from stages.common.schema import ParamsError, from_dict
from stages.crawl.config import Crawl, EngineDef

LOCAL = "local"     # the embedded site over the demo corpus the crawl renders (local_site.py)
FOLDER = "folder"   # no search at all: ingest <folder>/<class>/* files

BUILTIN: dict[str, dict[str, Any]] = {
    # The embedded default: results arrive by JavaScript as the page scrolls; each
    # result carries JSON in data-meta whose "murl" is the full-size image.
    LOCAL: {
        "search_url": "{origin}/search?q={query}",
        "result": "a.kiln-result",
        "full_url": {"attribute": "data-meta", "json_key": "murl"},
        "more": "scroll",
        "end_selector": "#kiln-end",
    },
    # Bing images: a.iusc holds JSON in its "m" attribute; "murl" is the original image.
    "bing": {
        "search_url": "https://www.bing.com/images/search?q={query}&form=HDRSC2&first=1",
        "result": "a.iusc",
        "full_url": {"attribute": "m", "json_key": "murl"},
        "more": "scroll",
        "more_selector": "a.btn_seemore, input.btn_seemore",
        "consent": "#bnp_btn_accept",
    },
    # DuckDuckGo images: tiles lazy-load a proxied image whose "u" parameter is the
    # (Bing-hosted, larger) image; the original file is only in the detail pane.
    "duckduckgo": {
        "search_url": "https://duckduckgo.com/?q={query}&iax=images&ia=images",
        "result": "img.tile--img__img",
        "full_url": {"attribute": "data-src", "url_param": "u"},
        "more": "scroll",
    },
    # Google images, classic markup: result links go to /imgres?imgurl=<original>.
    "google": {
        "search_url": "https://www.google.com/search?q={query}&tbm=isch",
        "result": "a[href*='imgurl=']",
        "full_url": {"attribute": "href", "url_param": "imgurl"},
        "more": "scroll",
        "more_selector": "input[type='button'][value*='more' i]",
        "consent": "button#L2AGLb",
    },
}


def resolve_engine(crawl: Crawl) -> EngineDef | None:
    """The EngineDef ``crawl.engine`` names (user engines shadow built-ins); None for folder."""
    if crawl.engine == FOLDER:
        return None
    if crawl.engine in crawl.engines:
        return crawl.engines[crawl.engine]
    if crawl.engine in BUILTIN:
        return from_dict(EngineDef, BUILTIN[crawl.engine], f"engines.{crawl.engine}")
    allowed = sorted({FOLDER, *BUILTIN, *crawl.engines})
    raise ParamsError("crawl.engine", f"unknown engine {crawl.engine!r}; allowed: {', '.join(allowed)}")


def search_url(engine: EngineDef, term: str, origin: str = "") -> str:
    return engine.search_url.replace("{origin}", origin).replace("{query}", quote_plus(term))


def page_url(engine: EngineDef, term: str, page: int, origin: str = "") -> str:
    """URL of result page ``page`` (0-based) for ``more: pages`` engines."""
    offset = page * engine.page_size
    return (engine.page_url.replace("{origin}", origin).replace("{query}", quote_plus(term))
            .replace("{page}", str(page + 1)).replace("{offset}", str(offset + 1)))


def _json_key(text: str, dotted: str) -> Any:
    value: Any = json.loads(text)
    for key in dotted.split("."):
        if isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        elif isinstance(value, dict) and key in value:
            value = value[key]
        else:
            return None
    return value


def extract_full_url(raw: str | None, spec, base_url: str) -> str | None:
    """The full-size image URL from one result's attribute value, or None if absent.

    ``spec`` is a FullUrl: optionally a dotted key of JSON inside the attribute, then
    optionally a query parameter of that URL; relative URLs resolve against the page.
    """
    if not raw or not raw.strip():
        return None
    value: Any = raw.strip()
    if spec.json_key:
        try:
            value = _json_key(value, spec.json_key)
        except (json.JSONDecodeError, TypeError):
            return None
        if not isinstance(value, str) or not value:
            return None
    if spec.url_param:
        found = parse_qs(urlsplit(urljoin(base_url, value)).query).get(spec.url_param)
        if not found:
            return None
        value = found[0]
    return urljoin(base_url, value)
