"""Classification report: metrics JSON, confusion matrix (DVC plot + PNG), misclassified grid."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support  # noqa: E402

from stages.common.io import atomic_path, write_json  # noqa: E402
from stages.families.classifier.core.fit import score  # noqa: E402
from stages.shared.cam import grad_cam, overlay
from stages.shared.pictures import image_grid, save_png  # noqa: E402
from stages.shared.shards import Shard  # noqa: E402


def classification_metrics(labels: np.ndarray, preds: np.ndarray, classes: list[str]) -> dict:
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, preds, labels=range(len(classes)), zero_division=0)
    per_class = {c: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                 for c, p, r, f, s in zip(classes, precision, recall, f1, support)}
    return {"accuracy": float((labels == preds).mean()) if len(labels) else float("nan"),
            "macro_f1": float(np.mean(f1)), "per_class": per_class}


def confusion_png(matrix: np.ndarray, classes: list[str], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(1.2 * len(classes) + 2.5, 1.2 * len(classes) + 2))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, str(value), ha="center", va="center",
                color="white" if value > matrix.max() / 2 else "black")
    ax.set_title("confusion matrix (test)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def misclassified_grid(shard: Shard, probs: torch.Tensor, count: int, topk: int):
    """Wrongly classified images, most confident mistakes first, captioned with the top-k."""
    preds = probs.argmax(1)
    wrong = torch.nonzero(preds != shard.labels).flatten()
    wrong = wrong[probs[wrong, preds[wrong]].argsort(descending=True)][:count]
    if len(wrong) == 0:
        return None
    k = min(topk, probs.shape[1])
    captions = []
    for i in wrong.tolist():
        top_p, top_c = probs[i].topk(k)
        lines = [f"true: {shard.classes[int(shard.labels[i])]}"]
        lines += [f"{shard.classes[c]} {p:.2f}" for p, c in zip(top_p.tolist(), top_c.tolist())]
        captions.append("\n".join(lines))
    return image_grid(list(shard.images[wrong]), min(8, len(wrong)), captions=captions, tile=96,
                      caption_lines=k + 1)


def heatmap_grid(model, preprocess, shard: Shard, probs: torch.Tensor, count: int, device):
    """Grad-CAM of test images, mistakes first: each image beside its heatmap overlay."""

    preds = probs.argmax(1)
    wrong = torch.nonzero(preds != shard.labels).flatten()
    right = torch.nonzero(preds == shard.labels).flatten()
    pick = torch.cat([wrong[: count // 2], right[: count - min(len(wrong), count // 2)]])[:count]
    if len(pick) == 0:
        return None
    images = shard.images[pick]
    heat = grad_cam(model, preprocess(images.to(device)))
    tiles, captions = [], []
    for i, image, blended in zip(pick.tolist(), images, overlay(images, heat)):
        tiles += [image, blended]
        pred = int(preds[i])
        captions += [f"true: {shard.classes[int(shard.labels[i])]}", f"{shard.classes[pred]} {probs[i, pred]:.2f}"]
    return image_grid(tiles, 8, captions=captions, tile=96)


def write_report(labels: torch.Tensor, classes: list[str], probs: torch.Tensor, out_dir: Path, *,
                 grid=None) -> dict:
    """metrics.json's content, the confusion plot (JSON + PNG) and the misclassified ``grid``."""
    loss, _ = score(probs, labels)
    labels, preds = labels.numpy(), probs.argmax(1).numpy()
    metrics = {**classification_metrics(labels, preds, classes), "loss": loss, "images": len(labels)}
    plots = out_dir / "plots"
    write_json(plots / "confusion.json", [{"actual": classes[a], "predicted": classes[p]}
                                          for a, p in zip(labels.tolist(), preds.tolist())])
    confusion_png(confusion_matrix(labels, preds, labels=range(len(classes))), classes, plots / "confusion.png")
    if grid is not None:
        save_png(grid, plots / "misclassified.png")
    metrics["misclassified"] = int((labels != preds).sum())
    return metrics
