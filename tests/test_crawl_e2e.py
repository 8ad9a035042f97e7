"""dvc repro runs the crawl stage as dvc.yaml declares it (deps, params, outs)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from crawl_fakes import make_corpus

REPO = Path(__file__).resolve().parents[1]


def run(cmd: list[str], cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "PYTHONPATH": str(cwd)}
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.e2e
@pytest.mark.browser
def test_dvc_repro_crawl(tmp_path):
    # the working tree as git would commit it: tracked files and new ones not ignored
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True).stdout.split()
    for name in sorted(set(files)):
        if not (REPO / name).is_file():   # deleted in the working tree, not yet in git
            continue
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, tmp_path / name)
    git = ["git", "-c", "user.email=kiln@test", "-c", "user.name=kiln"]
    run(["git", "init", "-q"], tmp_path)
    run([sys.executable, "-m", "dvc", "init", "-f", "-q"], tmp_path)  # .dvc/ came with the files
    run([*git, "add", "-A"], tmp_path)
    run([*git, "commit", "-qm", "kiln"], tmp_path)
    make_corpus(tmp_path / "data" / "demo", per_class=5)

    run([sys.executable, "-m", "dvc", "repro", "--single-item", "crawl"], tmp_path)
    rows = [json.loads(x) for x in (tmp_path / "data/raw/manifest.jsonl").read_text().splitlines()]
    assert {r["class"] for r in rows} == {"bowl", "vase"}
    assert all((tmp_path / r["path"]).is_file() for r in rows)   # paths relative to the repo root
    assert "crawl" in (tmp_path / "dvc.lock").read_text()
    again = run([sys.executable, "-m", "dvc", "repro", "--single-item", "crawl"], tmp_path)
    assert "didn't change, skipping" in again or "up to date" in again
