"""Typed schema of params.yaml.

Each top-level section is a dataclass; family sections (``train.<family>``,
``evaluate.<family>``, ``hpo.<family>``) come from the family registry, so a
family owns its own config (nanoGPT's GPTConfig style). ``load_params`` fails
with a ParamsError naming the dotted key path; ``run_stage`` turns that into a
single line on stderr and exit code 2 before the stage touches any output.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import yaml

from stages.schema import ParamsError, bounds, from_dict

PARAMS_FILE = "params.yaml"
FRACTION = bounds(ge=0.0, le=1.0)
PROBABILITY = bounds(ge=0.0, le=1.0)


# --- base -------------------------------------------------------------------
@dataclass
class Base:
    seed: int = 42
    image_size: int = field(default=64, metadata=bounds(ge=16, le=1024))
    classes: list[str] = field(default_factory=lambda: ["bowl", "vase"])
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = field(default=0, metadata=bounds(ge=0))  # 0: torch's default

    def validate(self, path: str) -> None:
        if len(self.classes) < 2:
            raise ParamsError(f"{path}.classes", "needs at least two class names")
        if len(set(self.classes)) != len(self.classes):
            raise ParamsError(f"{path}.classes", f"has duplicate names: {self.classes}")


# --- demo corpus ------------------------------------------------------------
@dataclass
class Demo:
    n_per_class: int = field(default=1000, metadata=bounds(ge=1))
    image_size: int = field(default=64, metadata=bounds(ge=16, le=1024))
    distractors_per_class: int = field(default=100, metadata=bounds(ge=0))
    junk_per_class: int = field(default=60, metadata=bounds(ge=0))


# --- split ------------------------------------------------------------------
@dataclass
class Fractions:
    train: float = field(default=0.7, metadata=FRACTION)
    val: float = field(default=0.15, metadata=FRACTION)
    test: float = field(default=0.15, metadata=FRACTION)

    def validate(self, path: str) -> None:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ParamsError(path, f"train + val + test must sum to 1 (got {total:g})")
        if self.train == 0:
            raise ParamsError(f"{path}.train", "must be > 0")


@dataclass
class Rebalance:
    # none | mean | max | min: target count per class from the class sizes;
    # fraction: that fraction of the largest class; count: a fixed number.
    mode: Literal["none", "mean", "max", "min", "fraction", "count"] = "none"
    fraction: float = field(default=1.0, metadata=bounds(gt=0.0, le=1.0))
    count: int = field(default=0, metadata=bounds(ge=0))

    def validate(self, path: str) -> None:
        if self.mode == "count" and self.count < 1:
            raise ParamsError(f"{path}.count", "must be >= 1 when mode is 'count'")


@dataclass
class Split:
    fractions: Fractions = field(default_factory=Fractions)
    rebalance: Rebalance = field(default_factory=Rebalance)
    class_weights: Literal["none", "balanced"] = "none"
    # perceptual-hash bit distance within which images count as near duplicates and share
    # a split (transitively); -1: only byte-identical copies are grouped
    near_duplicates: int = field(default=4, metadata=bounds(ge=-1, le=32))


# --- augment ----------------------------------------------------------------
@dataclass
class Elastic:
    p: float = field(default=0.0, metadata=PROBABILITY)
    alpha: float = field(default=30.0, metadata=bounds(ge=0))
    sigma: float = field(default=4.0, metadata=bounds(gt=0))


@dataclass
class Flip:
    p: float = field(default=0.0, metadata=PROBABILITY)


@dataclass
class Crop:
    p: float = field(default=0.0, metadata=PROBABILITY)
    scale: list[float] = field(default_factory=lambda: [0.75, 1.0])
    ratio: list[float] = field(default_factory=lambda: [0.8, 1.25])

    def validate(self, path: str) -> None:
        for name, pair in (("scale", self.scale), ("ratio", self.ratio)):
            if len(pair) != 2 or not 0 < pair[0] <= pair[1]:
                raise ParamsError(f"{path}.{name}", f"must be [low, high] with 0 < low <= high (got {pair})")
        if self.scale[1] > 1:
            raise ParamsError(f"{path}.scale", f"high must be <= 1 (got {self.scale[1]})")


@dataclass
class Erasing:
    p: float = field(default=0.0, metadata=PROBABILITY)
    scale: list[float] = field(default_factory=lambda: [0.02, 0.25])

    def validate(self, path: str) -> None:
        if len(self.scale) != 2 or not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise ParamsError(f"{path}.scale", f"must be [low, high] within (0, 1] (got {self.scale})")


@dataclass
class Rotation:
    p: float = field(default=0.0, metadata=PROBABILITY)
    degrees: float = field(default=10.0, metadata=bounds(ge=0, le=180))


@dataclass
class AugmentOps:
    """The decathlon DataAugmentor's ops, each with a probability and a magnitude."""
    elastic: Elastic = field(default_factory=Elastic)
    hflip: Flip = field(default_factory=Flip)
    vflip: Flip = field(default_factory=Flip)
    crop: Crop = field(default_factory=Crop)
    erasing: Erasing = field(default_factory=Erasing)
    rotation: Rotation = field(default_factory=Rotation)


@dataclass
class Augment:
    per_class: int = field(default=0, metadata=bounds(ge=0))  # 0: no offline augmentation
    offline: AugmentOps = field(default_factory=AugmentOps)
    online: AugmentOps = field(default_factory=AugmentOps)
    preview: int = field(default=8, metadata=bounds(ge=1, le=64))  # originals in the preview grid


# --- crawl ------------------------------------------------------------------
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
    per_host_concurrency: int = field(default=4, metadata=bounds(ge=1, le=256))
    per_host_rate: float = field(default=2.0, metadata=bounds(ge=0))   # requests/s; 0 = no limit
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


# --- filter -------------------------------------------------------------------
FILTER_CHECKS = ("corrupt", "too_small", "odd_aspect", "odd_size", "dark", "light",
                 "low_information", "blurry", "exact_duplicate", "near_duplicate")
DEMO_LABEL_NAMES = ("pot", "distractor", "junk", "exact_duplicate", "near_duplicate", "blank", "dark",
                    "light", "blurry", "low_information", "tiny", "odd_aspect", "grayscale",
                    "truncated", "not_image")


@dataclass
class FilterQuality:
    """cleanvision-style checks; each threshold is on a score from stages/quality.py."""
    checks: list[str] = field(default_factory=lambda: list(FILTER_CHECKS))
    analysis_size: int = field(default=128, metadata=bounds(ge=16))  # scores on a thumbnail this big
    min_side: int = field(default=32, metadata=bounds(ge=1))          # too_small: shorter side (px)
    min_aspect: float = field(default=0.5, metadata=bounds(gt=0, le=1))  # odd_aspect: short/long side
    size_ratio: float = field(default=8.0, metadata=bounds(gt=1))     # odd_size: x or / median sqrt(area)
    dark_max: float = field(default=0.12, metadata=FRACTION)          # dark: 99th pct brightness below
    light_min: float = field(default=0.7, metadata=FRACTION)          # light: 5th pct brightness above
    low_info_max: float = field(default=0.08, metadata=FRACTION)      # low_information: contrast (widest channel range) below
    sharpness_min: float = field(default=0.18, metadata=bounds(ge=0))  # blurry: Laplacian std / grey std
    grayscale: Literal["keep", "drop"] = "drop"
    grayscale_tol: float = field(default=4.0, metadata=bounds(ge=0, le=255))  # channel spread (0..255)
    near_max_distance: int = field(default=14, metadata=bounds(ge=0, le=16))  # phash bits (candidates)
    near_min_correlation: float = field(default=0.945, metadata=bounds(ge=-1, le=1))  # thumbnails (verify)

    def validate(self, path: str) -> None:
        for i, name in enumerate(self.checks):
            if name not in FILTER_CHECKS:
                raise ParamsError(f"{path}.checks.{i}", f"unknown check {name!r}; allowed: {', '.join(FILTER_CHECKS)}")


@dataclass
class FilterNet:
    """One ensemble member with one logit (P(keep)): a stages.nets.BNConvNet trained from
    scratch (bnconv; widths, hidden), or a head (hidden: [] = linear) on the pooled features
    of a frozen ImageNet trunk (mobilenet_v2; weights installed offline by stages.weights)."""
    arch: Literal["bnconv", "mobilenet_v2"] = "bnconv"
    image_size: int = field(default=32, metadata=bounds(ge=16, le=256))
    widths: list[int] = field(default_factory=lambda: [16, 32, 64, 128])
    hidden: list[int] = field(default_factory=lambda: [64])
    dropout: float = field(default=0.0, metadata=FRACTION)
    epochs: int = field(default=160, metadata=bounds(ge=1))  # with balance: passes over the rare label
    batch_size: int = field(default=64, metadata=bounds(ge=1))
    lr: float = field(default=0.003, metadata=bounds(gt=0))
    weight_decay: float = field(default=0.0001, metadata=bounds(ge=0))
    balance: bool = True    # each epoch: all rarer-label examples + an equal fresh draw of the other

    def validate(self, path: str) -> None:
        if any(h < 1 for h in self.hidden):
            raise ParamsError(f"{path}.hidden", f"must be positive layer sizes (got {self.hidden})")
        if self.arch != "bnconv":
            return
        if not self.widths or any(w < 1 for w in self.widths):
            raise ParamsError(f"{path}.widths", f"must be a non-empty list of positive widths (got {self.widths})")
        if self.image_size < 2 ** len(self.widths):
            raise ParamsError(f"{path}.image_size", f"{self.image_size} px is too small for "
                              f"{len(self.widths)} pooling blocks (needs >= {2 ** len(self.widths)})")


@dataclass
class DemoLabels:
    """Ground-truth kinds or junk types of the demo corpus standing in for hand labels."""
    keep: list[str] = field(default_factory=list)
    reject: list[str] = field(default_factory=list)

    def validate(self, path: str) -> None:
        for side in ("keep", "reject"):
            for i, name in enumerate(getattr(self, side)):
                if name not in DEMO_LABEL_NAMES:
                    raise ParamsError(f"{path}.{side}.{i}", f"unknown kind {name!r}; allowed: {', '.join(DEMO_LABEL_NAMES)}")


@dataclass
class FilterLabels:
    folder: str | None = None        # <folder>/keep/*, <folder>/reject/*: hand-curated examples
    weak: bool = False               # crawl rows as weak labels (own terms keep, negative terms reject)
    negative_terms: list[str] = field(default_factory=list)
    demo: DemoLabels = field(default_factory=DemoLabels)


@dataclass
class EnsembleFilter:
    members: int = field(default=3, metadata=bounds(ge=1))
    vote: Literal["all", "majority", "mean"] = "all"
    threshold: float = field(default=0.9, metadata=PROBABILITY)
    holdout: float = field(default=0.3, metadata=bounds(ge=0, lt=1))  # labelled share kept for scoring
    per_class: bool = False     # one ensemble per class; other classes' rows are its rejects
    net: FilterNet = field(default_factory=FilterNet)
    labels: FilterLabels = field(default_factory=FilterLabels)


@dataclass
class Filter:
    quality: FilterQuality = field(default_factory=FilterQuality)
    cascade: list[str] = field(default_factory=list)          # filter names, run in this order
    filters: dict[str, EnsembleFilter] = field(default_factory=dict)
    contact_sheet: int = field(default=48, metadata=bounds(ge=1, le=400))  # images per reason sheet

    def validate(self, path: str) -> None:
        for i, name in enumerate(self.cascade):
            if name not in self.filters:
                raise ParamsError(f"{path}.cascade.{i}", f"no filter named {name!r} under {path}.filters")


# --- family sections ----------------------------------------------------------
def _family_sections(data: Any, path: str, families: list[str], kind: str) -> dict[str, Any]:
    """Parse ``<kind>.<family>`` with each family's own dataclass."""
    from stages.families import get_family, family_names

    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ParamsError(path, f"must be a mapping of family name to settings (got {data!r})")
    known = family_names()
    for name in data:
        if name not in known:
            raise ParamsError(f"{path}.{name}", f"unknown family; allowed: {', '.join(known)}")
    sections = {}
    for name in families:
        config_cls = getattr(get_family(name), f"{kind}_config")
        if config_cls is None:
            continue
        sections[name] = from_dict(config_cls, data.get(name), f"{path}.{name}")
    return sections


# --- the whole file -------------------------------------------------------------
@dataclass
class Params:
    base: Base
    demo: Demo
    split: Split
    augment: Augment
    crawl: Crawl
    filter: Filter
    families: list[str]
    train: dict[str, Any]
    evaluate: dict[str, Any]
    hpo: dict[str, Any]  # hpo.<family>, for families that register an hpo_config
    raw: dict  # the parsed YAML, for fingerprints


SECTIONS: dict[str, type] = {"base": Base, "demo": Demo, "crawl": Crawl, "filter": Filter, "split": Split,
                             "augment": Augment}
FAMILY_KINDS = ("train", "evaluate", "hpo")


def parse_params(data: Any) -> Params:
    from stages.families import family_names

    if not isinstance(data, dict):
        raise ParamsError("", "params.yaml must be a mapping of sections")
    allowed = set(SECTIONS) | set(FAMILY_KINDS) | {"families"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ParamsError(unknown[0], f"unknown section; allowed: {', '.join(sorted(allowed))}")
    sections = {name: from_dict(cls, data.get(name), name) for name, cls in SECTIONS.items()}
    families = data.get("families", ["classifier"])
    if not isinstance(families, list) or not families:
        raise ParamsError("families", f"must be a non-empty list of family names (got {families!r})")
    for i, name in enumerate(families):
        if name not in family_names():
            raise ParamsError(f"families.{i}", f"unknown family {name!r}; allowed: {', '.join(family_names())}")
    kinds = {kind: _family_sections(data.get(kind), kind, families, kind) for kind in FAMILY_KINDS}
    return Params(**sections, families=families, **kinds, raw=data)


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ParamsError("", f"cannot read {path}: {err.strerror}") from err
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ParamsError("", f"{path} is not valid YAML{where}") from err
    return parse_params(data)


class StageError(RuntimeError):
    """Bad input other than params (a missing file, a corrupt image): exit 1, one line."""


def run_stage(main: Callable[[list[str] | None], Any], argv: list[str] | None = None) -> None:
    """Run a stage's main; bad params exit 2 and bad input exit 1, each with one clear line."""
    try:
        main(argv)
    except ParamsError as err:
        where = f"{PARAMS_FILE}: {err.path}: " if err.path else f"{PARAMS_FILE}: "
        print(f"kiln: error: {where}{err.message}", file=sys.stderr)
        sys.exit(2)
    except StageError as err:
        print(f"kiln: error: {err}", file=sys.stderr)
        sys.exit(1)
