"""Benchmark: kiln's quality checks vs cleanvision's Imagelab on the same folder of photos.

    python bench/filter_throughput.py [FOLDER] [--cleanvision-python PY] [--workers N] [--json OUT]

FOLDER (default ../shared/data/catsdogs/train, beside the repo) is searched recursively
for images; both tools get the same sorted list, read once beforehand so neither pays the
cold disk. Timed, each from its own start to its flags (kiln: every score, then the
collection checks; cleanvision: ``find_issues()`` with its defaults, on its default
number of processes):

- kiln ``full x1``: every image decoded at full size in one process (the old path);
- kiln ``draft x1``, ``full xN``, ``draft xN``: DCT-scaled JPEG decoding and/or N
  processes (``filter.quality.draft``, ``filter.quality.workers``; N = every core);
- cleanvision, in its own virtual environment: ``--cleanvision-python`` names its python;
  without it the bench creates (first run: ``python -m venv`` + ``pip install
  cleanvision``, which needs the package index) or reuses ``$TMPDIR/kiln-bench-cleanvision``.
  cleanvision is no kiln dependency.

Prints images/s (wall) and CPU-ms per image (this process and its children: the fair
figure when other work shares the cores), the machine's load before and after, the ratio
to cleanvision, whether ``xN`` gave the same scores as ``x1``, how far draft decoding
moved each score and which verdicts it changed, and per check the images each tool flags
(both / kiln only / cleanvision only). ``--json`` writes every flagged file name too.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing.forkserver
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from stages.filter.config import FilterQuality  # noqa: E402
from stages.filter.measure_pool import available_cores, measure_all  # noqa: E402
from stages.filter.quality import quality_reasons  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_FOLDER = REPO.parent / "shared" / "data" / "catsdogs" / "train"
DEFAULT_VENV = Path(tempfile.gettempdir()) / "kiln-bench-cleanvision"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
SCORES = ("bright_high", "bright_low", "contrast", "sharpness", "colour_spread", "entropy")
# kiln check -> cleanvision issue type (too_small and corrupt have no cleanvision twin)
CLEANVISION_NAME = {"dark": "dark", "light": "light", "blurry": "blurry", "low_information": "low_information",
                    "odd_aspect": "odd_aspect_ratio", "odd_size": "odd_size", "grayscale": "grayscale",
                    "exact_duplicate": "exact_duplicates", "near_duplicate": "near_duplicates"}

# runs inside cleanvision's environment: argv[1] a JSON list of paths; prints one JSON object
CLEANVISION_SCRIPT = r"""
import json, os, resource, sys, time
from cleanvision import Imagelab
paths = json.load(open(sys.argv[1]))
def cpu():
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
wall, cpu0 = time.perf_counter(), cpu()
lab = Imagelab(filepaths=paths, verbose=False)
lab.find_issues(verbose=False)
wall, cpu_s = time.perf_counter() - wall, cpu() - cpu0
issue_cols = [c for c in lab.issues.columns if c.startswith("is_") and c.endswith("_issue")]
flags = {c[3:-6]: [str(p) for p in lab.issues.index[lab.issues[c]]] for c in issue_cols}
print(json.dumps({"seconds": wall, "cpu_seconds": cpu_s, "flags": flags}))
"""


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path, default=DEFAULT_FOLDER)
    parser.add_argument("--cleanvision-python", type=Path, default=None,
                        help=f"python of an environment with cleanvision (default: a venv in {DEFAULT_VENV})")
    parser.add_argument("--workers", type=int, default=0, help="processes for the xN runs (0: every core)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds; each contender's fastest is kept")
    parser.add_argument("--json", type=Path, default=None, help="write every figure and flagged file here")
    return parser.parse_args(argv)


def image_paths(folder: Path) -> list[str]:
    if not folder.is_dir():
        sys.exit(f"filter_throughput: no folder {folder} (give a folder of images as the first argument)")
    paths = sorted(str(p) for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        sys.exit(f"filter_throughput: no images under {folder}")
    return paths


def cleanvision_python(given: Path | None) -> Path:
    """The python to run cleanvision with: the one given, else the bench's own venv (made once)."""
    if given is not None:
        return given
    python = DEFAULT_VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {DEFAULT_VENV} with cleanvision (once; pass --cleanvision-python to use another)")
        subprocess.run([sys.executable, "-m", "venv", str(DEFAULT_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "cleanvision"], check=True)
    return python


def cpu_seconds() -> float:
    """CPU time of this process, its finished children, and the pool's finished workers: those
    are the fork server's children, so their time shows in its /proc entry (Linux), not in ours."""
    t = os.times()
    own = t.user + t.system + t.children_user + t.children_system
    server = getattr(multiprocessing.forkserver._forkserver, "_forkserver_pid", None)
    try:
        fields = Path(f"/proc/{server}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return own
    # after the ")" ending the command name: utime, stime, cutime, cstime are fields 12..15
    return own + sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def run_kiln(paths: list[str], draft: bool, workers: int, cfg: FilterQuality) -> dict:
    """Scores and collection checks, timed from the start to the reasons."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    stats = measure_all(paths, cfg.analysis_size, draft, workers, desc=f"kiln draft={draft} workers={workers}")
    reasons, _ = quality_reasons(stats, cfg)
    return {"seconds": time.perf_counter() - wall, "cpu_seconds": cpu_seconds() - cpu,
            "stats": stats, "reasons": reasons}


def run_cleanvision(python: Path, paths: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "paths.json").write_text(json.dumps(paths))
        (Path(tmp) / "run.py").write_text(CLEANVISION_SCRIPT)
        done = subprocess.run([str(python), str(Path(tmp) / "run.py"), str(Path(tmp) / "paths.json")],
                              check=False, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"filter_throughput: cleanvision failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def same_stats(a: list, b: list) -> bool:
    """Every field of every image equal (thumbnails compared as arrays)."""
    for x, y in zip(a, b, strict=True):
        for f in dataclasses.fields(x):
            u, v = getattr(x, f.name), getattr(y, f.name)
            if not (np.array_equal(u, v) if isinstance(u, np.ndarray) else u == v):
                return False
    return True


def score_shift(full: list, drafted: list) -> dict:
    """Per score, how far draft decoding moved it: median and max |change| over decoded images
    that draft decoding actually reduced, and how many were reduced."""
    pairs = [(f, d) for f, d in zip(full, drafted) if f.error is None and d.decode_scale > 1]
    shift = {"reduced": len(pairs), "scales": {}}
    for _, d in pairs:
        shift["scales"][str(d.decode_scale)] = shift["scales"].get(str(d.decode_scale), 0) + 1
    for name in SCORES:
        moved = np.abs([getattr(d, name) - getattr(f, name) for f, d in pairs]) if pairs else np.zeros(1)
        shift[name] = {"median": float(np.median(moved)), "max": float(moved.max())}
    shift["phash_bits"] = {"median": float(np.median([_bits(f.phash, d.phash) for f, d in pairs] or [0])),
                           "max": max([_bits(f.phash, d.phash) for f, d in pairs] or [0])}
    return shift


def _bits(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


def verdict_changes(paths: list[str], before: list[list[str]], after: list[list[str]]) -> list[dict]:
    return [{"file": paths[i], "full": before[i], "draft": after[i]}
            for i in range(len(paths)) if sorted(before[i]) != sorted(after[i])]


def flags_side_by_side(paths: list[str], reasons: list[list[str]], cleanvision: dict) -> dict:
    """Per check: the files kiln flags, cleanvision flags, both."""
    table = {}
    for check, cv_name in CLEANVISION_NAME.items():
        ours = {paths[i] for i, r in enumerate(reasons) if check in r}
        theirs = set(cleanvision["flags"].get(cv_name, []))
        table[check] = {"kiln": sorted(ours), "cleanvision": sorted(theirs), "both": sorted(ours & theirs)}
    for check in ("too_small", "corrupt"):
        table[check] = {"kiln": sorted(paths[i] for i, r in enumerate(reasons) if check in r), "cleanvision": None}
    return table


def print_report(n: int, runs: dict, cleanvision: dict, load: tuple, extra: dict) -> None:
    cv_rate, cv_cpu = n / cleanvision["seconds"], cleanvision["cpu_seconds"]
    print(f"\n{n} images; {available_cores()} cores; load average before {load[0]:.2f}, after {load[1]:.2f}")
    print(f"{'':<20}{'images/s':>9}{'CPU ms/img':>12}{'x cleanvision (wall)':>22}{'(CPU)':>7}")
    for name, run in (*runs.items(), ("cleanvision", cleanvision)):
        label = name if name == "cleanvision" else "kiln " + name
        print(f"{label:<20}{n / run['seconds']:>9.0f}{1000 * run['cpu_seconds'] / n:>12.2f}"
              f"{n / run['seconds'] / cv_rate:>22.2f}{cv_cpu / run['cpu_seconds']:>7.2f}")
    print(f"xN scores identical to x1: {extra['deterministic']}")
    shift = extra["shift"]
    print(f"draft decoding reduced {shift['reduced']} images (scale: count {shift['scales']}); score moves "
          + ", ".join(f"{k} median {shift[k]['median']:.4f} max {shift[k]['max']:.4f}" for k in SCORES)
          + f"; phash bits median {shift['phash_bits']['median']:.0f} max {shift['phash_bits']['max']}")
    print(f"verdicts changed by draft decoding: {len(extra['changes'])}"
          + "".join(f"\n  {Path(c['file']).name}: {c['full']} -> {c['draft']}" for c in extra["changes"][:10]))
    print(f"\n{'check':<17}{'kiln':>6}{'cleanvision':>13}{'both':>6}")
    for check, row in extra["flags"].items():
        theirs = "-" if row["cleanvision"] is None else len(row["cleanvision"])
        both = "-" if row["cleanvision"] is None else len(row["both"])
        print(f"{check:<17}{len(row['kiln']):>6}{theirs:>13}{both:>6}")


KILN_RUNS = (("full x1", False, 1), ("draft x1", True, 1), ("full xN", False, None), ("draft xN", True, None))


def timed_rounds(paths: list[str], python: Path, workers: int, rounds: int) -> tuple[dict, dict]:
    """Every contender once per round, the order rotated each round; per contender the
    fastest round (the one least disturbed by other work on the machine)."""
    cfg = FilterQuality()
    contenders = [(name, lambda d=draft, w=w: run_kiln(paths, d, workers if w is None else w, cfg))
                  for name, draft, w in KILN_RUNS] + [("cleanvision", lambda: run_cleanvision(python, paths))]
    best: dict[str, dict] = {}
    for k in range(rounds):
        for name, run in contenders[k % len(contenders):] + contenders[:k % len(contenders)]:
            result = run()
            if name not in best or result["seconds"] < best[name]["seconds"]:
                best[name] = result
    cleanvision = best.pop("cleanvision")
    return best, cleanvision


def main(argv=None) -> None:
    args = parse_args(argv)
    paths = image_paths(args.folder)
    python = cleanvision_python(args.cleanvision_python)
    for path in paths:              # both tools start from the page cache
        Path(path).read_bytes()
    load_before = os.getloadavg()[0]
    runs, cleanvision = timed_rounds(paths, python, args.workers, args.rounds)
    load_after = os.getloadavg()[0]
    extra = {"deterministic": same_stats(runs["draft x1"]["stats"], runs["draft xN"]["stats"])
             and same_stats(runs["full x1"]["stats"], runs["full xN"]["stats"]),
             "shift": score_shift(runs["full x1"]["stats"], runs["draft xN"]["stats"]),
             "changes": verdict_changes(paths, runs["full x1"]["reasons"], runs["draft xN"]["reasons"]),
             "flags": flags_side_by_side(paths, runs["draft xN"]["reasons"], cleanvision)}
    print_report(len(paths), runs, cleanvision, (load_before, load_after), extra)
    if args.json:
        figures = {name: {"images_per_s": len(paths) / r["seconds"], "cpu_ms_per_image": 1000 * r["cpu_seconds"] / len(paths)}
                   for name, r in {**runs, "cleanvision": cleanvision}.items()}
        args.json.write_text(json.dumps({"folder": str(args.folder), "images": len(paths), "cores": available_cores(),
                                         "rounds": args.rounds, "load": [load_before, load_after], "figures": figures,
                                         **extra}, indent=1))


if __name__ == "__main__":
    main()
