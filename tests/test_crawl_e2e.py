"""dvc repro runs crawl -> filter as dvc.yaml declares them (deps, params, outs): the crawl
renders the demo corpus itself (no demo stage, no data/demo) and the filter takes the ground
truth from the rows."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stages.shared.packs import image_exists

REPO = Path(__file__).resolve().parents[1]
TINY_OBJECT_NET = {"arch": "bnconv", "image_size": 16, "widths": [8, 16], "hidden": [16], "epochs": 3,
                   "batch_size": 16, "lr": 0.01, "weight_decay": 0.0001}


def run(cmd: list[str], cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "PYTHONPATH": str(cwd)}
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def tiny_params(path: Path) -> None:
    """The shipped params, the demo and the object filter shrunk: mechanics, not quality."""
    data = yaml.safe_load(path.read_text())
    data["demo"].update(n_per_class=20, image_size=48, distractors_per_class=4, junk_per_class=12)
    for query in data["crawl"]["queries"]:
        query["count"] = 36   # the whole class: 20 pots, 4 distractors, 12 junk
    data["filter"]["filters"]["object"].update(members=2, net=TINY_OBJECT_NET, threshold=0.2, vote="mean")
    data["filter"]["contact_sheet"] = 4
    path.write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.mark.e2e
@pytest.mark.browser
def test_dvc_repro_crawl_and_filter(tmp_path):
    # the working tree as git would commit it: tracked files and new ones not ignored
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True).stdout.split()
    for name in sorted(set(files)):
        if not (REPO / name).is_file():   # deleted in the working tree, not yet in git
            continue
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, tmp_path / name)
    tiny_params(tmp_path / "params.yaml")
    git = ["git", "-c", "user.email=kiln@test", "-c", "user.name=kiln"]
    run(["git", "init", "-q"], tmp_path)
    run([sys.executable, "-m", "dvc", "init", "-f", "-q"], tmp_path)  # .dvc/ came with the files
    run([*git, "add", "-A"], tmp_path)
    run([*git, "commit", "-qm", "kiln"], tmp_path)

    log = run([sys.executable, "-m", "dvc", "repro", "filter"], tmp_path)
    assert "Running stage 'crawl'" in log and "Running stage 'filter'" in log and "'demo'" not in log
    assert "is empty" not in log   # DVC warns about no empty output
    assert not (tmp_path / "data/demo").exists()
    rows = [json.loads(x) for x in (tmp_path / "data/raw/manifest.jsonl").read_text().splitlines()]
    assert {r["class"] for r in rows} == {"bowl", "vase"}
    assert all(image_exists(tmp_path / r["path"]) and r["truth"] for r in rows)   # paths relative to the root
    kept = [json.loads(x) for x in (tmp_path / "data/filtered/manifest.jsonl").read_text().splitlines()]
    pots = [r for r in kept if r["truth"]["kind"] == "pot"]
    assert pots and all(r["factors"] and len(r["fields"]) == 69 for r in pots)   # what split reads
    metrics = json.loads((tmp_path / "metrics/filter.json").read_text())
    assert metrics["demo"]["all"]["n"]["pot"] == sum(r["truth"]["kind"] == "pot" for r in rows) > 30
    assert json.loads((tmp_path / "models/filter/cascade.json").read_text())["ran"] == ["object"]
    lock = yaml.safe_load((tmp_path / "dvc.lock").read_text())["stages"]
    assert set(lock) == {"params", "crawl", "filter"}
    assert any(d["path"] == "data/params/crawl.json" for d in lock["crawl"]["deps"])
    assert "demo" in json.loads((tmp_path / "data/params/crawl.json").read_text())
    again = run([sys.executable, "-m", "dvc", "repro", "filter"], tmp_path)
    assert "didn't change, skipping" in again or "up to date" in again
    assert "Running stage" not in again
