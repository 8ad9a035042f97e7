"""Which stages does DVC rerun when one module changes? Checked against the import closures.

    python bench/code_deps.py REPO      # REPO: a checkout where `dvc repro` has finished

For every module under REPO/stages it appends a comment, asks `dvc status --json` which
stages changed, and restores the file; then prints one row per module: the stages DVC
marks, and how that compares with the stages whose static import closure holds the module
(tests/import_graph.py): `exact`, or the stages marked without importing it (DVC's foreach
gives every family one dep list) and, worse, stages that import it but are not marked.
Exit 1 if any stage that imports a module is not marked.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import import_graph  # noqa: E402
from test_dvc_deps import INSTANCES  # noqa: E402


def changed_stages(repo: Path) -> set[str]:
    out = subprocess.run(["dvc", "status", "--json"], cwd=repo, capture_output=True, text=True, check=True)
    status = json.loads(out.stdout or "{}")
    return {name.split(":")[-1] for name, changes in status.items()
            if any("changed deps" in c for c in changes if isinstance(c, dict))}


def importers(relpath: str) -> set[str]:
    return {name for name, stage in INSTANCES.items()
            if relpath in import_graph.closure_files(stage["entries"])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repo", type=Path)
    repo = parser.parse_args().repo.resolve()
    if changed_stages(repo):
        sys.exit(f"{repo}: dvc status is not clean before the edits; run dvc repro first")
    missed_any = False
    for path in sorted((repo / "stages").rglob("*.py")):
        rel = path.relative_to(repo).as_posix()
        original = path.read_bytes()
        try:
            path.write_bytes(original + b"\n# kiln bench/code_deps.py\n")
            marked = changed_stages(repo)
        finally:
            path.write_bytes(original)
        expected = importers(rel)
        extra, missed = sorted(marked - expected), sorted(expected - marked)
        missed_any |= bool(missed)
        verdict = "exact" if not extra and not missed else (
            f"+{len(extra)} not importing it: {', '.join(extra)}" + (f"; MISSED {missed}" if missed else ""))
        print(f"{rel:52} {len(marked):2} marked  {verdict}")
    return 1 if missed_any else 0


if __name__ == "__main__":
    sys.exit(main())
