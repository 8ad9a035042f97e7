"""evaluate@dcgan: FID/KID against held-out images (beside a trivial baseline's), and the
share of samples the trained kiln classifier labels as the class they were asked for."""
from __future__ import annotations

import torch
import torchvision.transforms.functional as TF

from stages.common.errors import StageError
from stages.families._shared import gen as genbase
from stages.families._shared.geneval import all_fid_metrics
from stages.families.classifier.core import load_classifier
from stages.families.dcgan.core import grid_inputs, load_gan
from stages.shared.pictures import save_grid, to_uint8


def generate_for(gans, labels: torch.Tensor, fields: torch.Tensor, seed: int, device, batch: int = 64):
    """One uint8 sample (N, 3, S, S) per (label, fields) row, with seeded noise."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(len(labels), gans.cfg.noise_dim, generator=gen)
    out = []
    for i in range(0, len(labels), batch):
        lab = labels[i:i + batch]
        cond = gans.cond(lab, fields[i:i + batch]).to(device)
        out.append(to_uint8(gans.generate(lab.to(device), cond, noise[i:i + batch].to(device))))
    return torch.cat(out)


def trivial_baseline(images: torch.Tensor, tiles: int, sigma: float, seed: int) -> torch.Tensor:
    """Real images with their tiles shuffled and blurred: real colours, no pot shapes. uint8 (N,3,S,S)."""
    gen = torch.Generator().manual_seed(seed)
    n, _, size, _ = images.shape
    step = size // tiles
    cropped = images[:, :, :step * tiles, :step * tiles]
    patches = cropped.unfold(2, step, step).unfold(3, step, step)      # (N, 3, t, t, step, step)
    patches = patches.reshape(n, 3, tiles * tiles, step, step)
    order = torch.stack([torch.randperm(tiles * tiles, generator=gen) for _ in range(n)])
    patches = patches[torch.arange(n)[:, None], :, order].permute(0, 2, 1, 3, 4)   # (N, 3, t*t, step, step)
    mixed = patches.reshape(n, 3, tiles, tiles, step, step).permute(0, 1, 2, 4, 3, 5).reshape(n, 3, step * tiles, -1)
    mixed = TF.resize(mixed, [size, size], antialias=True) if step * tiles != size else mixed
    kernel = int(2 * round(3 * sigma) + 1)
    return TF.gaussian_blur(mixed.float(), [kernel, kernel], [sigma, sigma]).round().clamp(0, 255).to(torch.uint8)


def classifier_path(ctx):
    """models/<evaluate.dcgan.classifier>/model.pt, checked before any slow work."""
    path = ctx.models_root / ctx.cfg.classifier / "model.pt"
    if not path.is_file():
        raise StageError(f"{path}: missing classifier checkpoint (evaluate@dcgan labels samples with it; "
                         f"set evaluate.dcgan.classifier: '' to skip)")
    return path


def classifier_accuracy(ctx, samples: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> dict:
    """Share of samples the trained kiln classifier labels as their requested class."""

    path = classifier_path(ctx)

    model, clf_classes, preprocess = load_classifier(path, ctx.device)
    missing = [c for c in classes if c not in clf_classes]
    if missing:
        raise StageError(f"{path}: classifier does not know classes {missing} (knows {clf_classes})")
    wanted = torch.tensor([clf_classes.index(classes[i]) for i in labels.tolist()])
    samples = genbase.resize_uint8(samples, ctx.params.base.image_size)   # the classifier's training size
    with torch.no_grad():
        predicted = torch.cat([model(preprocess(samples[i:i + 64].to(ctx.device))).argmax(1).cpu()
                               for i in range(0, len(samples), 64)])
    hits = predicted == wanted
    per_class = {f"class_accuracy_{name}": hits[labels == i].float().mean().item()
                 for i, name in enumerate(classes) if (labels == i).any()}
    return {"class_accuracy": hits.float().mean().item(), **per_class}


def evaluate(ctx) -> dict:

    cfg, seed = ctx.cfg, ctx.params.base.seed
    if cfg.classifier:
        classifier_path(ctx)
    gans, ckpt = load_gan(ctx.checkpoint_path, ctx.device)
    test = genbase.read_shard(ctx.test_shard)
    if test.classes != gans.classes:
        raise StageError(f"{ctx.test_shard}: classes {test.classes} differ from the model's {gans.classes}")
    real = genbase.resize_uint8(test.images, gans.cfg.image_size)
    samples = generate_for(gans, test.labels, test.fields, seed, ctx.device)   # one per held-out image
    baseline = trivial_baseline(real, cfg.baseline_tiles, cfg.baseline_blur, seed)
    sets = {"": samples, "_baseline": baseline}
    metrics = all_fid_metrics(real, sets, cfg, ctx.device)
    if cfg.classifier:
        metrics.update(classifier_accuracy(ctx, samples, test.labels, gans.classes))
    _pictures(ctx, gans, ckpt, real, baseline, test.labels)
    metrics["samples"] = len(samples)
    return metrics


def _pictures(ctx, gans, ckpt, real, baseline, labels) -> None:
    """samples.png (one row of fresh samples per class), real.png and baseline.png beside it."""

    per_class = ctx.cfg.grid_per_class
    grid_labels, cond, noise = grid_inputs(gans, ckpt["field_bank"], per_class, ctx.params.base.seed + 1, ctx.device)
    plots = ctx.out_dir / "plots"
    save_grid(gans.generate(grid_labels, cond, noise), plots / "samples.png", nrow=per_class)
    pick = torch.cat([(labels == i).nonzero().flatten()[:per_class] for i in range(len(gans.classes))])
    save_grid(real[pick], plots / "real.png", nrow=per_class)
    save_grid(baseline[pick], plots / "baseline.png", nrow=per_class)
