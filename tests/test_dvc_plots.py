"""`dvc plots show` works offline: the HTML template inlines vega, vega-lite and vega-embed,
and the confusion matrix and training curves are defined in dvc.yaml."""
from __future__ import annotations

import configparser
import json
import re
import shutil
import subprocess
from pathlib import Path

import yaml

from tests.conftest import REPO, stage_env

FAMILIES = sorted(p.name for p in (REPO / "stages/families").iterdir() if p.is_dir() and p.name[0] not in "_.")
EXTERNAL_SCRIPT = re.compile(r"<script[^>]*\bsrc\s*=\s*[\"']?(https?:)?//", re.IGNORECASE)


def template_path() -> Path:
    config = configparser.ConfigParser()
    config.read(REPO / ".dvc/config")
    return REPO / ".dvc" / config["plots"]["html_template"]


def test_the_template_inlines_the_libraries_and_keeps_their_licences():
    page = template_path().read_text()
    assert "{plot_divs}" in page and "{scripts}" not in page   # dvc-render's CDN tags go to {scripts}
    assert not EXTERNAL_SCRIPT.search(page)
    build = (REPO / ".dvc/plots/build.sh").read_text()
    for name, version in re.findall(r'"(vega(?:-lite|-embed)?) (\d+\.\d+\.\d+) ', build):
        assert f"/* {name}@{version} (npm)" in page
        assert "Redistribution and use" in (REPO / f".dvc/plots/LICENSE-{name}").read_text()
    assert "vegaEmbed" in page and "vegaLite" in page


def test_dvc_plots_show_writes_a_page_with_no_network_script(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()

    def run(*cmd):
        subprocess.run(cmd, cwd=root, env=stage_env(), capture_output=True, text=True, check=True)

    run("git", "init", "-q")
    run("dvc", "init", "-q")
    shutil.copytree(REPO / ".dvc/plots", root / ".dvc/plots")
    shutil.copy(REPO / ".dvc/config", root / ".dvc/config")
    (root / "confusion.json").write_text(json.dumps(
        [{"actual": a, "predicted": p} for a, p in [("bowl", "bowl"), ("vase", "bowl"), ("vase", "vase")]]))
    (root / "dvc.yaml").write_text(yaml.safe_dump({"plots": [
        {"Confusion": {"template": "confusion", "x": "actual", "y": {"confusion.json": "predicted"}}}]}))
    run("dvc", "plots", "show", "-o", "out")
    page = (root / "out/index.html").read_text()
    assert not EXTERNAL_SCRIPT.search(page)
    assert "vegaEmbed(" in page and '"Confusion"' in page


def test_dvc_yaml_draws_the_confusion_matrix_with_the_confusion_template():
    evaluate = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["evaluate"]["do"]
    (spec,) = [entry["metrics/eval/${item}/plots"] for entry in evaluate["plots"] if isinstance(entry, dict)]
    assert (spec["template"], spec["x"], spec["y"]) == ("confusion", "actual", "predicted")
    # what evaluate@classifier writes there: one {actual, predicted} row per test image
    report = (REPO / "stages/families/classifier/evaluate/report.py").read_text()
    assert 'plots / "confusion.json", [{"actual": classes[a], "predicted": classes[p]}' in report


def test_training_curves_have_titles_and_name_files_the_families_write():
    plots = yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"]
    curves = [spec for entry in plots if isinstance(entry, dict) for spec in entry.values()]
    assert curves and all(spec.get("title") and spec.get("x") == "step" for spec in curves)
    for spec in curves:
        for path, field in spec["y"].items():
            family, name = re.match(r"metrics/train/(\w+)/plots/metrics/(.+)\.tsv$", path).groups()
            assert family in FAMILIES and name.rsplit("/", 1)[-1] == field


def test_every_output_is_cached():
    """Per-epoch images and metrics go to DVC's cache, never into git (no cache: false)."""
    def flags(node):
        if isinstance(node, dict):
            yield from ((k, v) for k, v in node.items() if k in ("cache", "persist"))
            node = list(node.values())
        for child in node if isinstance(node, list) else []:
            yield from flags(child)

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert [(k, v) for k, v in flags(stages) if (k, v) != ("persist", True)] == []
