"""Can a small CNN tell the demo's bowls from its vases at 64 px? (target: test accuracy >= 0.97)

    PYTHONPATH=. python bench/demo_separability.py [--per-class 600] [--epochs 8] [--seed 42]

Renders pots with the demo renderer (no disk), trains a 4-block CNN from scratch on
80 % of them and prints the held-out accuracy. Also prints the accuracy of a
position-only baseline (logistic regression on the mean-subtracted pot mask would need
the mask; instead: a linear model on 8x8 grayscale thumbnails) to show that coarse
pixel layout alone is a weaker cue than shape.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

from stages.demo.render import render_pot


def render_set(per_class: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for class_index in (0, 1):
        for i in range(per_class):
            images.append(render_pot(seed, class_index, i, size).image)
            labels.append(class_index)
    return np.stack(images), np.array(labels)


def small_cnn() -> nn.Module:
    blocks, width = [], 3
    for out in (16, 32, 64, 64):
        blocks += [nn.Conv2d(width, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU(), nn.MaxPool2d(2)]
        width = out
    return nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 2))


def train_eval(x_train, y_train, x_test, y_test, epochs: int, seed: int) -> float:
    torch.manual_seed(seed)
    model = small_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt = torch.tensor(x_train).permute(0, 3, 1, 2).float() / 255  # (N, 3, H, W)
    yt = torch.tensor(y_train)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(xt))
        for start in range(0, len(xt), 64):
            idx = order[start:start + 64]
            batch = xt[idx]
            if torch.rand(()) < 0.5:
                batch = batch.flip(3)  # bowls and vases are mirror-symmetric
            loss = nn.functional.cross_entropy(model(batch), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        logits = model(torch.tensor(x_test).permute(0, 3, 1, 2).float() / 255)
    return float((logits.argmax(1).numpy() == y_test).mean())


def thumbnail_baseline(x_train, y_train, x_test, y_test) -> float:
    from sklearn.linear_model import LogisticRegression

    def feats(x):  # (N, 8, 8) grayscale thumbnails, flattened
        gray = x.mean(axis=3).reshape(len(x), 8, x.shape[1] // 8, 8, x.shape[2] // 8).mean(axis=(2, 4))
        return gray.reshape(len(x), -1) / 255
    clf = LogisticRegression(max_iter=2000).fit(feats(x_train), y_train)
    return float(clf.score(feats(x_test), y_test))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=600)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    torch.set_num_threads(2)
    start = time.perf_counter()
    x, y = render_set(args.per_class, args.size, args.seed)
    perm = np.random.default_rng(args.seed).permutation(len(x))
    cut = int(0.8 * len(x))
    tr, te = perm[:cut], perm[cut:]
    rendered = time.perf_counter() - start
    acc = train_eval(x[tr], y[tr], x[te], y[te], args.epochs, args.seed)
    base = thumbnail_baseline(x[tr], y[tr], x[te], y[te])
    print(f"separability: {len(x)} pots ({args.per_class}/class) at {args.size}px rendered in {rendered:.1f}s; "
          f"small CNN test accuracy {acc:.4f} on {len(te)} ({args.epochs} epochs, "
          f"{time.perf_counter() - start - rendered:.0f}s); 8x8-thumbnail logistic baseline {base:.4f}")


if __name__ == "__main__":
    main()
