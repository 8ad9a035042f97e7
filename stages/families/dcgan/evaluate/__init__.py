"""evaluate@dcgan: FID/KID against held-out images (beside a trivial baseline's), and the
share of samples the trained kiln classifier labels as the class they were asked for."""
from __future__ import annotations

import torch
import torchvision.transforms.functional as TF

from stages.common.errors import StageError
from stages.families._shared import gen as genbase
from stages.families._shared.crop import crop_of, object_images
from stages.families._shared.geneval import (
    all_fid_metrics,
    memorisation,
    neighbour_picture,
)
from stages.families.classifier.core import load_classifier
from stages.families.dcgan.core import class_walk, grid_inputs, load_gan
from stages.shared.pictures import labelled_grid, save_gif, save_png, to_uint8

WALK_CHAINS, WALK_KEYS, WALK_STEPS = 4, 4, 12   # interpolation GIFs: walks side by side, key points, frames between
NEIGHBOURS_PER_CLASS = 4                          # samples shown beside their nearest training image


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
    # the same crop the model trained on: generated crops are compared with crops of held-out images
    real = object_images(test, *crop_of(ckpt["config"]), gans.cfg.image_size)
    samples = generate_for(gans, test.labels, test.fields, seed, ctx.device)   # one per held-out image
    baseline = trivial_baseline(real, cfg.baseline_tiles, cfg.baseline_blur, seed)
    sets = {"": samples, "_baseline": baseline}
    metrics = all_fid_metrics(real, sets, cfg, ctx.device)
    if cfg.classifier:
        metrics.update(classifier_accuracy(ctx, samples, test.labels, gans.classes))
    train = _train_images(ctx, ckpt)
    if train is not None:
        metrics.update(memorisation(samples, real, train[0]))
    plots = ctx.out_dir / "plots"
    _grids(ctx, gans, ckpt, real, baseline, test.labels, plots)
    if train is not None:
        _neighbours(gans, samples, test.labels, train, plots / "neighbours.png")
    _walks(ctx, gans, ckpt, plots)
    metrics["samples"] = len(samples)
    return metrics


def _train_images(ctx, ckpt):
    """(training images cropped as the model saw them, their labels), or None without --train."""
    if ctx.train_shard is None:
        return None
    train = genbase.read_shard(ctx.train_shard)
    return object_images(train, *crop_of(ckpt["config"]), int(ckpt["config"]["image_size"])), train.labels


def _grids(ctx, gans, ckpt, real, baseline, labels, plots) -> None:
    """samples.png (one row of fresh samples per class, titled), real.png and baseline.png beside it."""
    per_class = ctx.cfg.grid_per_class
    grid_labels, cond, noise = grid_inputs(gans, ckpt["field_bank"], per_class, ctx.params.base.seed + 1, ctx.device)
    crop = crop_of(ckpt["config"])[0]
    shown = f"(crop: {crop})" if crop != "none" else "(whole images)"
    save_png(labelled_grid(gans.generate(grid_labels, cond, noise), per_class, row_titles=gans.classes,
                           title=f"dcgan samples, one row per requested class {shown}"), plots / "samples.png")
    pick = torch.cat([(labels == i).nonzero().flatten()[:per_class] for i in range(len(gans.classes))])
    save_png(labelled_grid(real[pick], per_class, row_titles=gans.classes, title=f"held-out images {shown}"),
             plots / "real.png")
    save_png(labelled_grid(baseline[pick], per_class, row_titles=gans.classes,
                           title="trivial baseline: held-out images, tiles shuffled, blurred"), plots / "baseline.png")


def _neighbours(gans, samples, labels, train, path) -> None:
    """NEIGHBOURS_PER_CLASS samples of each class beside their nearest training images."""
    pick = torch.cat([(labels == i).nonzero().flatten()[:NEIGHBOURS_PER_CLASS] for i in range(len(gans.classes))])
    names = [f"{gans.classes[i]} sample" for i in labels[pick].tolist()]
    save_png(neighbour_picture(samples[pick], *train, gans.classes, NEIGHBOURS_PER_CLASS,
                               "dcgan: each sample beside its nearest training image (RMS pixel distance)", names), path)


def _walks(ctx, gans, ckpt, plots) -> None:
    """interpolation_<class>.gif: WALK_CHAINS looping walks through the class's noise and fields."""
    for label, name in enumerate(gans.classes):
        frames = class_walk(gans, ckpt["field_bank"], label, WALK_CHAINS, WALK_KEYS, WALK_STEPS,
                            ctx.params.base.seed + label, ctx.device)
        pictures = [labelled_grid(frame, WALK_CHAINS, tile=128, title=f"dcgan {name}: key point {step // WALK_STEPS + 1}"
                                  f" of {WALK_KEYS}, step {step % WALK_STEPS}/{WALK_STEPS}") for step, frame in enumerate(frames)]
        save_gif(pictures, plots / f"interpolation_{name}.gif", frame_ms=100)
