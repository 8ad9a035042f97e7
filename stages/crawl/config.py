"""params.yaml ``crawl``: searches, engines, download limits, the local site's misbehaviour."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from stages.common.schema import FRACTION, ParamsError, bounds, from_dict


@dataclass
class Query:
    """One search: ``term`` typed into the engine, its images filed under ``cls``."""
    term: str
    cls: str
    count: int = field(default=100, metadata=bounds(ge=1))


def parse_query(data: Any, path: str) -> Query:
    """``{term, class, count}``; ``class`` is a Python keyword, so it maps to ``cls``."""
    if not isinstance(data, dict):
        raise ParamsError(path, f"must be a mapping with term, class, count (got {data!r})")
    unknown = sorted(set(data) - {"term", "class", "count"})
    if unknown:
        raise ParamsError(f"{path}.{unknown[0]}", "unknown key; allowed: class, count, term")
    if "class" not in data:
        raise ParamsError(f"{path}.class", "is required (str)")
    renamed = {("cls" if k == "class" else k): v for k, v in data.items()}
    try:
        return from_dict(Query, renamed, path)
    except ParamsError as err:
        raise ParamsError(err.path.replace(f"{path}.cls", f"{path}.class"), err.message) from None


@dataclass
class FullUrl:
    """Where a result element keeps its full-size image URL."""
    attribute: str = "href"   # an attribute name, or "#text" for the element's text
    json_key: str = ""        # dotted key into JSON held by the attribute ("" = plain URL)
    url_param: str = ""       # then take this query parameter of that URL ("" = as is)


@dataclass
class EngineDef:
    """An image search engine as data: how to search, page on, and read results."""
    search_url: str                                    # "...?q={query}"
    result: str                                        # CSS selector of one result
    full_url: FullUrl = field(default_factory=FullUrl)
    more: Literal["scroll", "button", "pages"] = "scroll"
    more_selector: str = ""    # more: button -> the "more results" button
    page_url: str = ""         # more: pages -> "...?q={query}&first={offset}" ({page} too)
    page_size: int = field(default=35, metadata=bounds(ge=1))  # results per page (pages)
    end_selector: str = ""     # a "no more results" marker: stop as soon as it shows
    consent: str = ""          # CSS selector of a cookie-consent button to click, if any
    trusted_hosts: list[str] = field(default_factory=list)  # may resolve to private IPs

    def validate(self, path: str) -> None:
        if "{query}" not in self.search_url:
            raise ParamsError(f"{path}.search_url", "must contain {query}")
        if self.more == "button" and not self.more_selector:
            raise ParamsError(f"{path}.more_selector", "is required when more is 'button'")
        if self.more == "pages" and "{query}" not in self.page_url:
            raise ParamsError(f"{path}.page_url", "must contain {query} when more is 'pages'")


@dataclass
class LocalSite:
    """How the embedded local engine misbehaves (fractions of items, chosen by seed)."""
    page_size: int = field(default=100, metadata=bounds(ge=1))   # results per scroll
    slow_fraction: float = field(default=0.02, metadata=FRACTION)
    slow_s: float = field(default=0.2, metadata=bounds(ge=0))
    error_fraction: float = field(default=0.02, metadata=FRACTION)    # 404 or 500
    flaky_fraction: float = field(default=0.03, metadata=FRACTION)    # 503 once, then fine
    redirect_fraction: float = field(default=0.05, metadata=FRACTION)  # 1-2 hops, then fine
    wrong_type_fraction: float = field(default=0.01, metadata=FRACTION)  # served as text/html


@dataclass
class Crawl:
    engine: str = "local"      # local | bing | duckduckgo | google | folder | a key of engines
    # [{term, class, count}]; the default searches the demo's classes, like base.classes
    queries: list[Any] = field(default_factory=lambda: [{"term": c, "class": c, "count": 1200}
                                                        for c in ("bowl", "vase")])
    engines: dict[str, EngineDef] = field(default_factory=dict)  # user-defined engines
    folder: str = ""           # engine: folder -> a tree <folder>/<class>/*.jpg
    allowed_types: list[str] = field(default_factory=lambda: ["image/jpeg", "image/png", "image/webp"])
    max_bytes: int = field(default=20_000_000, metadata=bounds(ge=1024))
    max_pixels: int = field(default=40_000_000, metadata=bounds(ge=1))  # bomb guard
    min_side: int = field(default=32, metadata=bounds(ge=1))
    timeout_s: float = field(default=10.0, metadata=bounds(gt=0))      # connect / read
    deadline_s: float = field(default=60.0, metadata=bounds(gt=0))     # whole download
    retries: int = field(default=2, metadata=bounds(ge=0, le=10))
    backoff_s: float = field(default=0.5, metadata=bounds(ge=0))
    max_redirects: int = field(default=5, metadata=bounds(ge=0, le=20))
    concurrency: int = field(default=8, metadata=bounds(ge=1, le=256))
    browsers: int = field(default=1, metadata=bounds(ge=1, le=16))    # Chromium sessions searching terms at once
    per_host_concurrency: int = field(default=8, metadata=bounds(ge=1, le=256))
    # requests/s per host; 0 = no limit (the local engine is loopback): ~2 for public hosts
    per_host_rate: float = field(default=0.0, metadata=bounds(ge=0))
    user_agent: str = "kiln/0.1 (image dataset crawler)"
    page_load_timeout_s: float = field(default=30.0, metadata=bounds(gt=0))
    scroll_wait_s: float = field(default=2.0, metadata=bounds(gt=0))  # for new results
    scroll_patience: int = field(default=2, metadata=bounds(ge=1))    # empty scrolls, then stop
    max_scrolls: int = field(default=200, metadata=bounds(ge=1))
    load_images: bool = False  # let the browser fetch thumbnails (slower; URLs come from markup)
    local: LocalSite = field(default_factory=LocalSite)

    def validate(self, path: str) -> None:
        self.queries = [q if isinstance(q, Query) else parse_query(q, f"{path}.queries.{i}")
                        for i, q in enumerate(self.queries)]
        if self.engine != "folder" and not self.queries:
            raise ParamsError(f"{path}.queries", "needs at least one {term, class, count}")
        for reserved in ("local", "folder"):
            if reserved in self.engines:
                raise ParamsError(f"{path}.engines.{reserved}", "is a reserved engine name; pick another")
        if self.engine == "folder" and not self.folder:
            raise ParamsError(f"{path}.folder", "is required when engine is 'folder'")
        for i, kind in enumerate(self.allowed_types):
            if not kind.startswith("image/") or kind == "image/svg+xml":
                raise ParamsError(f"{path}.allowed_types.{i}", f"must be a raster image/* type (got {kind!r})")
