"""params.yaml ``filter``: quality checks and the ensemble cascade."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from stages.common.schema import FRACTION, PROBABILITY, ParamsError, bounds
from stages.filter.quality import ALL_CHECKS
from stages.shared.demo_labels import LABEL_NAMES

FILTER_CHECKS = ALL_CHECKS
DEMO_LABEL_NAMES = LABEL_NAMES


@dataclass
class FilterQuality:
    """cleanvision-style checks; each threshold is on a score from stages/quality.py."""
    checks: list[str] = field(default_factory=lambda: list(FILTER_CHECKS))
    analysis_size: int = field(default=128, metadata=bounds(ge=16))  # scores on a thumbnail this big
    draft: bool = True       # JPEGs decoded DCT-scaled (1/2, 1/4, 1/8) down to the thumbnail: ~1.6x less CPU
    workers: int = field(default=0, metadata=bounds(ge=0))   # processes measuring images; 0: every core
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


@dataclass(kw_only=True)
class FilterNet:
    """One ensemble member with one logit (P(keep)): a stages.nets.BNConvNet trained from
    scratch (bnconv; widths, hidden), or a head (hidden: [] = linear) on the pooled features
    of a frozen ImageNet trunk (mobilenet_v2; weights installed offline by stages.weights).

    The keys the shipped ``object`` and ``usable`` nets set differently have no default (one
    class cannot default to both): leaving one out stops with "is required"."""
    arch: Literal["bnconv", "mobilenet_v2"]
    image_size: int = field(metadata=bounds(ge=16, le=256))
    widths: list[int] = field(default_factory=lambda: [16, 32, 64, 128])
    hidden: list[int]
    dropout: float = field(default=0.0, metadata=FRACTION)
    epochs: int = field(metadata=bounds(ge=1))  # with balance: passes over the rare label
    batch_size: int = field(default=64, metadata=bounds(ge=1))
    lr: float = field(default=0.003, metadata=bounds(gt=0))
    weight_decay: float = field(metadata=bounds(ge=0))
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


@dataclass(kw_only=True)
class DemoLabels:
    """Ground-truth kinds or junk types of the demo corpus standing in for hand labels
    (required: the shipped filters' differ; ``{keep: [], reject: []}`` for none)."""
    keep: list[str]
    reject: list[str]

    def validate(self, path: str) -> None:
        for side in ("keep", "reject"):
            for i, name in enumerate(getattr(self, side)):
                if name not in DEMO_LABEL_NAMES:
                    raise ParamsError(f"{path}.{side}.{i}", f"unknown kind {name!r}; allowed: {', '.join(DEMO_LABEL_NAMES)}")


@dataclass(kw_only=True)
class FilterLabels:
    folder: str | None = None        # <folder>/keep/*, <folder>/reject/*: hand-curated examples
    weak: bool = False               # crawl rows as weak labels (own terms keep, negative terms reject)
    negative_terms: list[str] = field(default_factory=list)
    demo: DemoLabels                 # required: the shipped filters' differ


@dataclass(kw_only=True)
class EnsembleFilter:
    members: int = field(default=3, metadata=bounds(ge=1))
    vote: Literal["all", "majority", "mean"] = "all"
    threshold: float = field(default=0.9, metadata=PROBABILITY)
    holdout: float = field(default=0.3, metadata=bounds(ge=0, lt=1))  # labelled share kept for scoring
    # labelled examples used at most (a seeded, label-stratified sample; holdout is taken from
    # it), 0: all. The probe's accuracy saturates well below this, its cost would not.
    max_examples: int = field(default=20000, metadata=bounds(ge=0))
    per_class: bool = False     # one ensemble per class; other classes' rows are its rejects
    net: FilterNet              # required, as labels: the shipped filters' differ
    labels: FilterLabels


def shipped_filters() -> dict[str, EnsembleFilter]:
    """The two ensembles params.yaml ships: ``object`` (in the cascade) and ``usable``,
    what ``filter.filters`` is when params.yaml leaves it out."""
    return {
        "object": EnsembleFilter(   # "is it a pot?": a probe on frozen ImageNet features
            net=FilterNet(arch="mobilenet_v2", image_size=64, hidden=[], epochs=200, weight_decay=0.001),
            labels=FilterLabels(demo=DemoLabels(keep=["pot"], reject=["distractor"]))),
        "usable": EnsembleFilter(   # "is it a usable picture?": a small net from scratch
            net=FilterNet(arch="bnconv", image_size=32, hidden=[64], epochs=160, weight_decay=0.0001),
            labels=FilterLabels(demo=DemoLabels(keep=["pot", "distractor"],
                                                reject=["blank", "dark", "light", "blurry", "low_information",
                                                        "grayscale"]))),
    }


@dataclass
class Filter:
    quality: FilterQuality = field(default_factory=FilterQuality)
    cascade: list[str] = field(default_factory=lambda: ["object"])   # filter names, run in this order
    filters: dict[str, EnsembleFilter] = field(default_factory=shipped_filters)
    contact_sheet: int = field(default=48, metadata=bounds(ge=1, le=400))  # images per reason sheet

    def validate(self, path: str) -> None:
        for i, name in enumerate(self.cascade):
            if name not in self.filters:
                raise ParamsError(f"{path}.cascade.{i}", f"no filter named {name!r} under {path}.filters")
