"""dvclive for the training stages: model metrics under the family's name, machine figures in plots only.

``dvc exp show`` names a metric by its key alone whenever the key is unique across metrics
files, so ``val.accuracy`` would not say whose it is: every metric is logged as
``<family>/<name>`` (metrics.json: ``{"<family>": {...}, "step": N}``; curves under
``plots/metrics/<family>/``). Figures about the machine and the optimiser (``DIAGNOSTICS``)
change with load, not with the model: they are plotted (``plots/metrics/<name>.tsv``) and
kept out of metrics.json, so ``dvc metrics diff`` and ``dvc exp show`` compare models only.
"""
from __future__ import annotations

from dvclive import Live

DIAGNOSTICS = frozenset({"images_per_second", "epoch_seconds", "epoch_cpu_seconds", "lr", "lr_d", "lr_g"})


class FamilyLive(Live):
    """A dvclive ``Live`` writing into ``dir`` for one family (no dvc.yaml, no DVC experiment)."""

    def __init__(self, family: str, dir: str, **kwargs):
        self.family = family
        super().__init__(dir=dir, save_dvc_exp=False, dvcyaml=None, **kwargs)

    def log_metric(self, name: str, val, timestamp: bool = False, plot: bool = True):
        if name.rsplit("/", 1)[-1] in DIAGNOSTICS:
            super().log_metric(name, val, timestamp=timestamp, plot=True)
            self.summary = _without(self.summary, name.split("/"))
        else:
            super().log_metric(f"{self.family}/{name}", val, timestamp=timestamp, plot=plot)


def _without(summary: dict, keys: list[str]) -> dict:
    """``summary`` less the nested entry at ``keys`` (and any dict it leaves empty)."""
    head, *rest = keys
    if head not in summary:
        return summary
    if rest and isinstance(summary[head], dict):
        inner = _without(summary[head], rest)
        return {**summary, head: inner} if inner else {k: v for k, v in summary.items() if k != head}
    return {k: v for k, v in summary.items() if k != head}
