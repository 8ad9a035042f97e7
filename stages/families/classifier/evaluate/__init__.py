"""evaluate@classifier: accuracy, per-class figures, confusion matrix, misclassified images, Grad-CAM."""
from __future__ import annotations

from stages.common.errors import StageError
from stages.families.classifier.core import (
    load_classifier,
)
from stages.families.classifier.core.fit import (
    predict,
)
from stages.families.classifier.evaluate.report import heatmap_grid, write_report
from stages.shared.pictures import save_png
from stages.shared.shards import load_shard


# --- evaluation ----------------------------------------------------------------
def evaluate(ctx) -> dict:

    model, classes, preprocess = load_classifier(ctx.checkpoint_path, ctx.device)
    shard = load_shard(ctx.test_shard)
    if shard.classes != classes:
        raise StageError(f"{ctx.test_shard}: classes {shard.classes} differ from the model's {classes}")
    probs = predict(model, shard, preprocess=preprocess, batch_size=ctx.cfg.batch_size, device=ctx.device)
    metrics = write_report(shard, probs, ctx.out_dir, misclassified=ctx.cfg.misclassified, topk=ctx.cfg.topk)
    grid = heatmap_grid(model, preprocess, shard, probs, ctx.cfg.heatmaps, ctx.device) if ctx.cfg.heatmaps else None
    if grid is not None:
        save_png(grid, ctx.out_dir / "plots" / "heatmaps.png")
    return metrics
