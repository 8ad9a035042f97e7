"""params.yaml ``hpo.<family>``: the search settings and its space."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

from stages.common.schema import ParamsError, bounds
from stages.families import load_family_params
from stages.shared.training import TRAIN_SECTIONS


@dataclass
class Dimension:
    name: str                                   # dotted key of train.<family>, e.g. head.size
    type: Literal["real", "integer", "categorical"] = "real"
    low: float | None = None
    high: float | None = None
    prior: Literal["uniform", "log-uniform"] = "uniform"
    values: list[Any] = field(default_factory=list)   # categorical choices
    default: Any = None                         # the first point evaluated; null: the config's value

    def validate(self, path: str) -> None:
        if self.type == "categorical":
            if not self.values:
                raise ParamsError(f"{path}.values", "a categorical dimension needs a non-empty list")
        else:
            self._validate_bounds(path)
        if self.default is not None and not self.contains(self.default):
            raise ParamsError(f"{path}.default", f"{self.default!r} is outside the dimension")

    def _validate_bounds(self, path: str) -> None:
        if self.low is None or self.high is None or not self.low < self.high:
            raise ParamsError(path, f"{self.type} needs low < high (got low={self.low}, high={self.high})")
        if self.prior == "log-uniform" and self.low <= 0:
            raise ParamsError(f"{path}.low", "must be > 0 with prior: log-uniform")
        if self.type == "integer" and (self.low != int(self.low) or self.high != int(self.high)):
            raise ParamsError(path, "integer bounds must be whole numbers")

    def contains(self, value: Any) -> bool:
        if self.type == "categorical":
            return value in self.values
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        return self.low <= value <= self.high and (self.type == "real" or value == int(value))


def decathlon_space() -> list[Dimension]:
    """The decathlon project's search space; its defaults form the first point."""
    return [
        Dimension("epochs", "integer", 1, 10, default=3),
        Dimension("head.size", "integer", 6, 2048, "log-uniform", default=256),
        Dimension("lr", "real", 1e-6, 1e-2, "log-uniform", default=1e-3),
        Dimension("head.dropout", "real", 0.0, 0.9, default=0.3),
        Dimension("phases.unfreeze", "categorical", values=["last", "none"], default="last"),
        Dimension("head.layers", "integer", 1, 3, default=1),
        Dimension("head.activation", "categorical", values=["relu", "tanh"], default="relu"),
        Dimension("class_weights", "categorical", values=["none", "balanced"], default="none"),
    ]


def classifier_space() -> list[Dimension]:
    """The space params.yaml ships for the bnconv classifier (``hpo.classifier.space``), the
    default: learning rate, both dropouts, class weights; the shipped defaults come first."""
    return [
        Dimension("lr", "real", 1e-4, 1e-2, "log-uniform", default=0.002),
        Dimension("dropout", "real", 0.0, 0.5, default=0.1),
        Dimension("head_dropout", "real", 0.0, 0.6, default=0.3),
        Dimension("class_weights", "categorical", values=["none", "balanced"], default="none"),
    ]


@dataclass
class HpoConfig:
    n_calls: int = field(default=6, metadata=bounds(ge=0))        # 0: no search (empty best params)
    n_initial_points: int = field(default=3, metadata=bounds(ge=0))
    acq_func: Literal["EI", "PI", "LCB", "gp_hedge"] = "EI"
    base_estimator: Literal["GP", "RF", "ET", "GBRT"] = "GP"
    n_jobs: int = field(default=1, metadata=bounds(ge=1))       # points trained at once
    score: Literal["accuracy", "loss"] = "accuracy"              # validation accuracy (max) or loss (min)
    max_train: int = field(default=0, metadata=bounds(ge=0))     # subsample the training shard; 0: all
    trial_epochs: int = field(default=3, metadata=bounds(ge=0))  # epochs of a trial unless searched; 0: the config's
    # the shipped classifier space; decathlon_space() (meant for backbones) is written out to use it
    space: list[Dimension] = field(default_factory=classifier_space)
    # the trials' base train config (keys left out: the family's defaults)
    trial: dict[str, Any] = field(default_factory=lambda: {"arch": "bnconv", "widths": [16, 32, 64, 128],
                                                           "hidden": [128], "batch_size": 64})

    def validate(self, path: str) -> None:
        if not self.space:
            raise ParamsError(f"{path}.space", "needs at least one dimension")
        names = [d.name for d in self.space]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise ParamsError(f"{path}.space.{i}.name", f"{name!r} appears twice")


def load_hpo_params(path: str | Path, family: str) -> SimpleNamespace:
    """A training family's params plus ``hpo.<family>`` (absent: ``params.hpo`` is empty)."""
    params = load_family_params(path, family, (), TRAIN_SECTIONS)
    present = params.file.raw(f"hpo.{family}") is not None
    params.hpo = {family: params.file.section(f"hpo.{family}", HpoConfig)} if present else {}
    return params
