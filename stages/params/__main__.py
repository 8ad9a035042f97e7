"""params: python -m stages.params --out data/params

The first stage. It validates the whole of params.yaml and writes, per stage, the
normalised values that stage reads (``data/params/<stage>.json``, defaults filled in,
sorted keys). Every other stage depends on its own file instead of declaring ``params:``:

- a typo anywhere stops the chain here, before DVC deletes any other stage's outputs
  (outputs are no longer ``persist: true``, so DVC's run-cache can restore them);
- a stage reruns only when a value it reads changes, not when its section is reformatted
  or a default is written out;
- this stage declares every section as ``params:``, so ``dvc exp show`` and ``dvc exp run
  -S`` see them all.

The stages still read params.yaml themselves (its line numbers make the errors); the
files here are what DVC hashes.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from stages.augment.config import Augment
from stages.common.errors import PARAMS_FILE, run_stage
from stages.common.io import atomic_dir
from stages.common.params import Base, ParamsFile, read_params
from stages.common.schema import to_dict
from stages.crawl.config import Crawl
from stages.demo.config import Demo
from stages.families import family_names, family_section, read_families
from stages.filter.config import Filter
from stages.hpo.config import HpoConfig
from stages.split.config import Split

# The sections (or single keys) each stage reads; {f} is the family of a foreach stage.
STAGE_READS: dict[str, tuple[str, ...]] = {
    "crawl": ("base.classes", "base.seed", "crawl", "demo"),
    "filter": ("base.seed", "base.device", "base.threads", "filter"),
    "split": ("base", "split"),
    "augment": ("base.seed", "augment.per_class", "augment.offline", "augment.preview"),
    "hpo@{f}": ("base", "augment.online", "split.class_weights", "hpo.{f}"),
    "train@{f}": ("base", "augment.online", "split.class_weights", "train.{f}"),
    "evaluate@{f}": ("base", "evaluate.{f}"),
    "uses": ("families", "evaluate"),   # which other models each evaluation reads
}


def validated(params_file: ParamsFile) -> dict[str, Any]:
    """Every section checked by its dataclass, as plain data (the first bad key raises)."""
    values: dict[str, Any] = {
        "base": params_file.section("base", Base), "demo": params_file.section("demo", Demo),
        "crawl": params_file.section("crawl", Crawl), "filter": params_file.section("filter", Filter),
        "split": params_file.section("split", Split), "augment": params_file.section("augment", Augment),
    }
    values = {name: to_dict(value) for name, value in values.items()}
    values["families"] = read_families(params_file)
    for kind in ("train", "evaluate"):
        values[kind] = {f: to_dict(family_section(params_file, kind, f)) for f in family_names()}
    values["hpo"] = {}
    for f in family_names():
        present = params_file.raw(f"hpo.{f}") is not None
        values["hpo"][f] = to_dict(params_file.section(f"hpo.{f}", HpoConfig)) if present else None
    return values


def pick(values: dict[str, Any], dotted: str) -> Any:
    node: Any = values
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def stage_files(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{stage name: {dotted key: value}} for every stage of the chain (foreach ones per family)."""
    files = {}
    for stage, reads in STAGE_READS.items():
        families = family_names() if "{f}" in stage else [None]
        for f in families:
            name = stage.format(f=f)
            files[name] = {key.format(f=f): pick(values, key.format(f=f)) for key in reads}
    return files


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="kiln params", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path(PARAMS_FILE))
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    values = validated(read_params(args.params))
    files = stage_files(values)
    with atomic_dir(args.out) as tmp:
        for name, content in files.items():
            (tmp / f"{name}.json").write_text(json.dumps(content, indent=1, sort_keys=True) + "\n")
    print(f"params: {args.params} is valid; {len(files)} stage files in {args.out}")


if __name__ == "__main__":
    run_stage(main)
