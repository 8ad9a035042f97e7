"""evaluate@classifier: accuracy, per-class figures, confusion matrix, misclassified images, Grad-CAM.

The checkpoint's preset (core/preset.py, the one classify, serve and export use) picks the
images: a letterbox preset (bnconv) scores the 64-px test shard, letterboxed by the split stage
with the same ``load_rgb``; an eval-view preset (a backbone) scores the image store's test
split (``ctx.store_dir``) cut at the preset's crop (centre crop), as classify sees it.
"""
from __future__ import annotations

import torch

from stages.common.errors import StageError
from stages.families.classifier.core.data import ShardSource, Source, StoreSource
from stages.families.classifier.core.preset import load_with_preset
from stages.families.classifier.evaluate.picks import predict_keeping
from stages.families.classifier.evaluate.report import (
    heatmap_grid,
    misclassified_grid,
    write_report,
)
from stages.shared.pictures import save_png
from stages.shared.shards import load_shard
from stages.shared.store import open_store


def _test_source(ctx, preset, classes: list[str]) -> tuple[Source, str]:
    """The test split the model is scored on, and where it came from (for errors)."""
    if preset.view == "centre_crop":
        where = f"{ctx.store_dir}/test.json"
        source = StoreSource(open_store(ctx.store_dir, "test"), preset.crop,
                             workers=max(1, torch.get_num_threads()))
    else:
        where, source = str(ctx.test_shard), ShardSource(load_shard(ctx.test_shard))
    if list(source.classes) != list(classes):
        raise StageError(f"{where}: classes {source.classes} differ from the model's {classes}")
    return source, where


def evaluate(ctx) -> dict:
    model, classes, preprocess, preset = load_with_preset(ctx.checkpoint_path, ctx.device)
    source, _ = _test_source(ctx, preset, classes)
    probs, picked, picked_probs = predict_keeping(model, source, preprocess=preprocess,
                                                  batch_size=ctx.cfg.batch_size, device=ctx.device,
                                                  mistakes=ctx.cfg.misclassified, heatmaps=ctx.cfg.heatmaps)
    grid = misclassified_grid(picked, picked_probs, ctx.cfg.misclassified, ctx.cfg.topk) \
        if ctx.cfg.misclassified else None
    metrics = write_report(source.labels, classes, probs, ctx.out_dir, grid=grid)
    heat = heatmap_grid(model, preprocess, picked, picked_probs, ctx.cfg.heatmaps, ctx.device) \
        if ctx.cfg.heatmaps else None
    if heat is not None:
        save_png(heat, ctx.out_dir / "plots" / "heatmaps.png")
    return metrics
