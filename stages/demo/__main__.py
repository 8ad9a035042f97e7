"""Render the demo corpus: ``python -m stages.demo --out DIR [--params params.yaml]``.

Not a DVC stage: the crawl renders the corpus itself for ``crawl.engine: local``
(``build_corpus``); this command renders it alone, for tests, benches and a look.
Writes, atomically, ``<out>/files/<id>.<ext>`` (pots, distractors, junk, each carrying
its ground truth inside, see stages/shared/pngmeta.py), ``index.jsonl`` (ground truth
per item), ``pots.jsonl`` (the pots as a dataset manifest) and ``preview.png``. Reads
``base.seed``, ``base.classes`` and ``demo``.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import time
from pathlib import Path

from tqdm import tqdm

from stages.common.errors import PARAMS_FILE, run_stage
from stages.common.io import atomic_dir, sha256_bytes, write_jsonl
from stages.common.params import Base, read_params
from stages.common.schema import ParamsError
from stages.demo.config import Demo, check_demo_classes
from stages.demo.corpus import Rendered, plan_items, render_item
from stages.demo.preview import write_preview


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kiln demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--params", type=Path, default=Path(PARAMS_FILE))
    parser.add_argument("--workers", type=int, default=2, help="render processes (results do not depend on it)")
    return parser.parse_args(argv)


def load_demo_params(path: Path) -> tuple[Base, Demo]:
    """Only the sections the corpus depends on."""
    params_file = read_params(path)
    base, demo = params_file.section("base", Base), params_file.section("demo", Demo)
    try:
        check_demo_classes(base.classes)
    except ParamsError as err:
        raise params_file.located(err) from None
    return base, demo


def render_all(items, workers: int) -> list[Rendered]:
    """Render in a process pool; results come back in plan order whatever the pool does."""
    progress = dict(total=len(items), desc="demo", unit="img", mininterval=0.5)
    if workers <= 1:
        return [render_item(item) for item in tqdm(items, **progress)]
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        return list(tqdm(pool.imap(render_item, items, chunksize=32), **progress))


def index_row(rendered: Rendered, files_rel: str) -> dict:
    item = rendered.item
    return {"id": item.stem, "file": f"{files_rel}/{rendered.name}", "sha256": sha256_bytes(rendered.data),
            "kind": item.kind, "class": item.cls, "junk": rendered.junk,
            "fields": rendered.fields, "factors": rendered.factors}


def pot_manifest_row(row: dict) -> dict:
    return {"path": row["file"], "sha256": row["sha256"], "class": row["class"],
            "fields": row["fields"], "factors": row["factors"], "id": row["id"]}


def write_corpus(out: Path, rendered: list[Rendered], classes: list[str], size: int) -> list[dict]:
    files_rel = Path(os.path.relpath(out.resolve() / "files", Path.cwd())).as_posix()
    with atomic_dir(out) as tmp:
        (tmp / "files").mkdir()
        for item in rendered:
            (tmp / "files" / item.name).write_bytes(item.data)
        rows = [index_row(item, files_rel) for item in rendered]
        write_jsonl(tmp / "index.jsonl", rows)
        write_jsonl(tmp / "pots.jsonl", [pot_manifest_row(r) for r in rows if r["kind"] == "pot"])
        write_preview(tmp / "preview.png", rendered, classes, size)
    return rows


def build_corpus(out: Path, base: Base, demo: Demo, workers: int) -> str:
    """Render and write the whole corpus to ``out``; returns the one-line summary."""
    start = time.perf_counter()
    items = plan_items(base.classes, base.seed, demo.image_size, demo.n_per_class,
                       demo.distractors_per_class, demo.junk_per_class)
    rendered = render_all(items, max(1, workers))
    rows = write_corpus(out, rendered, base.classes, demo.image_size)
    counts = {kind: sum(r["kind"] == kind for r in rows) for kind in ("pot", "distractor", "junk")}
    return (f"demo: {len(rows)} items ({counts['pot']} pots, {counts['distractor']} distractors, "
            f"{counts['junk']} junk) for {', '.join(base.classes)} at {demo.image_size}px "
            f"in {time.perf_counter() - start:.1f}s -> {out}")


def main(argv=None) -> None:
    args = parse_args(argv)
    base, demo = load_demo_params(args.params)
    print(build_corpus(args.out, base, demo, args.workers))


if __name__ == "__main__":
    run_stage(main)
