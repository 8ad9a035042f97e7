"""kiln generate: pictures from the trained generative models.

    kiln generate dcgan --class vase -n 16 --out out/vases.png
    kiln generate dcgan --interpolate data/filtered/manifest.jsonl:0 data/filtered/manifest.jsonl:7 my.fields \
        --steps 12 --out out/morph          # out/morph.png (grid) and out/morph.gif (loops back)
    kiln generate vae -n 32 --out out/vae   # out/vae_samples.png, out/vae_traversals.png, .gif

A fields source is ``MANIFEST.jsonl:ROW`` (a row number, or an ``id``, of a row with fields: the
demo's pots carry theirs) or a file holding the 69 numbers of the 23 control points (JSON
list, or whitespace/comma separated).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from stages.common.errors import StageError, run_stage
from stages.common.io import read_jsonl
from stages.families.dcgan.core import load_gan
from stages.families.vae.core import load_vae
from stages.families.vae.evaluate import prior_samples, traversal
from stages.shared.pictures import grid_image, save_gif, save_grid


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="kiln generate", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="family", required=True)
    gan = sub.add_parser("dcgan", help="class samples, or an interpolation between fields")
    gan.add_argument("--model", type=Path, default=Path("models/dcgan/model.pt"))
    gan.add_argument("--class", dest="class_name", help="class to sample (default: the first)")
    gan.add_argument("-n", type=int, default=16, help="number of samples")
    gan.add_argument("--interpolate", nargs="+", metavar="FIELDS", help="two or more fields sources")
    gan.add_argument("--steps", type=int, default=10, help="frames between consecutive fields")
    vae = sub.add_parser("vae", help="prior samples and latent traversals")
    vae.add_argument("--model", type=Path, default=Path("models/vae/model.pt"))
    vae.add_argument("-n", type=int, default=16, help="number of prior samples")
    vae.add_argument("--steps", type=int, default=9, help="traversal steps per latent dimension")
    vae.add_argument("--span", type=float, default=2.5, help="traverse each latent over [-span, span]")
    for p in (gan, vae):
        p.add_argument("--out", type=Path, required=True, help="output path (PNG, or a stem for several files)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.n < 1 or args.steps < 2:
        parser.error("-n must be >= 1 and --steps >= 2")
    return args


# --- fields sources ------------------------------------------------------------------
def read_fields(spec: str) -> tuple[list[float], str | None]:
    """(fields, class or None) from ``MANIFEST.jsonl:ROW`` or a fields file."""
    path, sep, row = spec.rpartition(":")
    if sep and path.endswith(".jsonl"):
        return _manifest_fields(Path(path), row)
    file = Path(spec)
    try:
        text = file.read_text()
    except OSError as err:
        raise StageError(f"{spec}: cannot read fields file ({err.strerror})") from err
    try:
        data = json.loads(text)
        values = data["fields"] if isinstance(data, dict) else data
    except (json.JSONDecodeError, KeyError, TypeError):
        values = text.replace(",", " ").split()
    try:
        return [float(v) for v in values], None
    except (TypeError, ValueError) as err:
        raise StageError(f"{spec}: not a list of numbers (JSON, or separated by spaces/commas)") from err


def _manifest_fields(path: Path, row: str) -> tuple[list[float], str | None]:
    try:
        rows = read_jsonl(path)
    except (OSError, ValueError) as err:
        raise StageError(f"{path}: cannot read manifest ({err})") from err
    if row.isdigit():
        if int(row) >= len(rows):
            raise StageError(f"{path}: has {len(rows)} rows; row {row} does not exist")
        chosen = rows[int(row)]
    else:
        matches = [r for r in rows if str(r.get("id")) == row]
        if not matches:
            raise StageError(f"{path}: no row with id {row!r}")
        chosen = matches[0]
    if not chosen.get("fields"):
        raise StageError(f"{path}:{row}: row has no fields")
    return [float(v) for v in chosen["fields"]], chosen.get("class")


# --- dcgan -------------------------------------------------------------------------
def class_index(gans, name: str | None) -> int:
    if name is None:
        return 0
    if name not in gans.classes:
        raise StageError(f"--class {name!r}: the model knows {', '.join(gans.classes)}")
    return gans.classes.index(name)


def dcgan_samples(gans, ckpt, label: int, n: int, seed: int, device) -> torch.Tensor:
    """n samples of one class, fields drawn from that class's training fields: (n, 3, S, S)."""
    gen = torch.Generator().manual_seed(seed)
    bank = torch.tensor(ckpt["field_bank"][gans.classes[label]], dtype=torch.float32)
    fields = bank[torch.randint(len(bank), (n,), generator=gen)] if len(bank) else torch.zeros(n, 0)
    labels = torch.full((n,), label)
    noise = torch.randn(n, gans.cfg.noise_dim, generator=gen)
    return gans.generate(labels.to(device), gans.cond(labels, fields).to(device), noise.to(device)).cpu()


def interpolation(gans, endpoints: list[tuple[int, torch.Tensor]], steps: int, seed: int, device) -> torch.Tensor:
    """Frames from each endpoint to the next, looping back to the first: (K * steps, 3, S, S).

    The condition (one-hot class and scaled fields) is mixed linearly; the noise stays fixed,
    so only what the conditions control changes. A per-class model uses the nearer end's pair.
    """
    conds = [gans.cond(torch.tensor([label]), fields[None]) for label, fields in endpoints]   # each (1, C)
    weights = torch.arange(steps, dtype=torch.float32) / steps                               # (steps,)
    frames_cond, frames_label = [], []
    for i, (label, _) in enumerate(endpoints):
        j = (i + 1) % len(endpoints)
        frames_cond.append((1 - weights[:, None]) * conds[i] + weights[:, None] * conds[j])
        frames_label.append(torch.where(weights < 0.5, label, endpoints[j][0]).long())
    cond, labels = torch.cat(frames_cond), torch.cat(frames_label)
    noise = torch.randn(1, gans.cfg.noise_dim, generator=torch.Generator().manual_seed(seed)).expand(len(cond), -1)
    return gans.generate(labels.to(device), cond.to(device), noise.contiguous().to(device)).cpu()


def run_dcgan(args) -> list[Path]:

    gans, ckpt = load_gan(args.model, torch.device(args.device))
    if not args.interpolate:
        images = dcgan_samples(gans, ckpt, class_index(gans, args.class_name), args.n, args.seed, args.device)
        return [save_grid(images, args.out.with_suffix(".png"), nrow=min(8, args.n))]
    if len(args.interpolate) < 2:
        raise StageError("--interpolate needs two or more fields sources")
    endpoints = []
    for spec in args.interpolate:
        fields, name = read_fields(spec)
        if len(fields) != ckpt["field_dim"]:
            raise StageError(f"{spec}: has {len(fields)} numbers; the model was trained on {ckpt['field_dim']}")
        endpoints.append((class_index(gans, args.class_name or name), torch.tensor(fields)))
    frames = interpolation(gans, endpoints, args.steps, args.seed, args.device)
    grid = save_grid(frames, args.out.with_suffix(".png"), nrow=args.steps)
    pictures = [grid_image(frame[None], nrow=1, padding=0).resize((192, 192)) for frame in frames]
    return [grid, save_gif(pictures, args.out.with_suffix(".gif"))]


# --- vae ---------------------------------------------------------------------------
def run_vae(args) -> list[Path]:

    model, ckpt = load_vae(args.model, torch.device(args.device))
    latent = ckpt["config"]["latent_dim"]
    stem = args.out.with_suffix("")
    samples = prior_samples(model, args.n, latent, args.seed, args.device)
    rows = traversal(model, torch.zeros(latent), list(range(latent)), args.span, args.steps, args.device)
    outputs = [save_grid(samples, f"{stem}_samples.png", nrow=min(8, args.n)),
               save_grid(rows, f"{stem}_traversals.png", nrow=args.steps)]
    # the GIF sweeps all dimensions at once: frame t holds every row's t-th step, there and back
    order = list(range(args.steps)) + list(range(args.steps - 2, 0, -1))
    frames = [grid_image(rows[t::args.steps], nrow=min(latent, 5), padding=2) for t in order]
    outputs.append(save_gif(frames, f"{stem}_traversals.gif"))
    return outputs


def main(argv=None) -> None:
    args = parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    outputs = run_dcgan(args) if args.family == "dcgan" else run_vae(args)
    print(f"generate {args.family}: wrote {', '.join(str(p) for p in outputs)}")


if __name__ == "__main__":
    run_stage(main)
