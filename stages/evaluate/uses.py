"""uses: python -m stages.evaluate.uses --params data/params/uses.json --models models --out data/uses

What each evaluation reads besides its own model, so that each evaluate@<family> depends on
exactly that. DVC's foreach gives every item the same deps (no nested ``${...}``, no list
interpolated into deps), so this stage depends on the whole models/ folder and writes
``<out>/<family>.json`` for every family in ``families``: ``{path: sha256}`` of each other
model the family's evaluation reads (evaluate@dcgan: ``models/<evaluate.dcgan.classifier>/model.pt``),
``{}`` for the others. evaluate@<family> depends on its own file: a new classifier reruns
evaluate@dcgan and no other evaluation. The evaluate stage checks the hashes before it reads.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from stages.common.errors import StageError, run_stage
from stages.common.io import atomic_dir, sha256_file

# An evaluate.<family> key of this name names the family whose trained model it reads.
MODEL_KEY = "classifier"


def used_models(family: str, evaluate: dict, families: list[str], models: Path) -> dict[str, str]:
    """{path of another family's model.pt: its sha256} for one family's evaluation."""
    name = (evaluate.get(family) or {}).get(MODEL_KEY) or ""
    if not name:
        return {}
    if name not in families:
        raise StageError(f"evaluate.{family}.{MODEL_KEY}: '{name}' is not in families {families} "
                         f"(add it, or set evaluate.{family}.{MODEL_KEY}: '' to skip)")
    path = models / name / "model.pt"
    if not path.is_file():
        raise StageError(f"{path}: missing (evaluate@{family} reads it; run train@{name} first)")
    return {path.as_posix(): sha256_file(path)}


def check_uses(path: Path) -> None:
    """Stop when a model an evaluation reads differs from the one recorded in ``path``."""
    for model, sha in json.loads(path.read_text()).items():
        if not Path(model).is_file() or sha256_file(model) != sha:
            raise StageError(f"{model} changed since the uses stage recorded it in {path} (run dvc repro)")


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="kiln uses", description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, required=True, help="the params stage's uses.json")
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--out", type=Path, required=True)
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    values = json.loads(args.params.read_text())
    families, evaluate = values["families"], values["evaluate"]
    uses = {f: used_models(f, evaluate, families, args.models) for f in families}
    with atomic_dir(args.out) as tmp:
        for family, models in uses.items():
            (tmp / f"{family}.json").write_text(json.dumps(models, indent=1, sort_keys=True) + "\n")
    shown = "; ".join(f"{f}: {', '.join(m) or '-'}" for f, m in uses.items())
    print(f"uses: {shown}")


if __name__ == "__main__":
    run_stage(main)
