"""Make scikit-optimize 0.10 (no longer maintained) work with current numpy and scikit-learn.

Two breakages, both in the GBRT surrogate (``base_estimator="GBRT"``); GP, RF and ET work:
- numpy 2 removed ``np.in1d``, which ``GradientBoostingQuantileRegressor.predict`` calls;
- scikit-learn >= 1.6 reads an estimator's type from ``__sklearn_tags__`` along the MRO, and
  skopt lists ``BaseEstimator`` before ``RegressorMixin``, so ``is_regressor`` says no and
  ``Optimizer`` refuses it ("has to be a regressor").
``patch_skopt()`` fixes both in skopt's own namespace (numpy itself is left alone); it is
idempotent and a no-op where the versions installed do not need it.
"""
from __future__ import annotations

import types

import numpy as np

_PATCHED = False


class _NumpyWithIn1d(types.ModuleType):
    """numpy, plus the ``in1d`` alias skopt's gbrt module still calls."""

    def __init__(self):
        super().__init__("numpy")
        self.in1d = np.isin

    def __getattr__(self, name):
        return getattr(np, name)


def patch_skopt() -> None:
    global _PATCHED
    if _PATCHED:
        return
    import skopt.learning.gbrt as gbrt
    from sklearn.base import is_regressor

    if not hasattr(np, "in1d"):
        gbrt.np = _NumpyWithIn1d()
    cls = gbrt.GradientBoostingQuantileRegressor
    if not is_regressor(cls()) and hasattr(cls, "__sklearn_tags__"):
        def regressor_tags(self):
            tags = super(cls, self).__sklearn_tags__()
            tags.estimator_type = "regressor"
            return tags
        cls.__sklearn_tags__ = regressor_tags
    _PATCHED = True
