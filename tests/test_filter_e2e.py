"""dvc exp run -S filter.<...>=... reruns filter and what follows it, nothing before it."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.test_filter_stage import TINY_FILTER

REPO = Path(__file__).resolve().parents[1]
DVC = [sys.executable, "-m", "dvc"]

PIPELINE = {"stages": {
    "raw": {"cmd": "python make_raw.py && echo raw >> .kiln/ran",
            "deps": ["make_raw.py"], "params": ["base.seed"], "outs": ["data/raw", "data/demo"]},
    "filter": {"cmd": "python -m stages.filter --input data/raw/manifest.jsonl --truth data/demo/index.jsonl "
                      "--out data/filtered --models models/filter --metrics metrics/filter.json "
                      "--sheets metrics/filter && echo filter >> .kiln/ran",
               "deps": ["stages", "data/raw", "data/demo"], "params": ["base", "filter"],
               "outs": ["data/filtered", "models/filter"],
               "metrics": [{"metrics/filter.json": {"cache": False}}]},
    "after": {"cmd": "python -c \"import shutil; shutil.copy('data/filtered/manifest.jsonl', 'kept.jsonl')\" "
                     "&& echo after >> .kiln/ran",
              "deps": ["data/filtered"], "outs": ["kept.jsonl"]},
}}

MAKE_RAW = """
from pathlib import Path
from tests.test_filter_stage import build_corpus
build_corpus(Path('.'))
"""


def run(args, cwd):
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"   # stage cmds' python
    env = {**os.environ, "PATH": path, "PYTHONPATH": str(cwd), "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t",
           "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.mark.e2e
def test_threshold_change_reruns_filter_and_downstream_only(tmp_path):
    shutil.copytree(REPO / "stages", tmp_path / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    stub = tmp_path / "stages/families/classifier.py"
    if not stub.exists():   # params name the classifier family; a branch without it gets a stand-in
        stub.write_text("from stages.families import register_family\n"
                        "register_family('classifier', train_config=None, evaluate_config=None,"
                        " train=None, evaluate=None)\n")
    (tmp_path / "tests").mkdir()
    shutil.copy(REPO / "tests" / "test_filter_stage.py", tmp_path / "tests")
    (tmp_path / "tests" / "__init__.py").write_text("")
    (tmp_path / "make_raw.py").write_text(MAKE_RAW)
    (tmp_path / ".kiln").mkdir()
    (tmp_path / ".gitignore").write_text(".kiln/\n__pycache__/\n")
    params = {"base": {"seed": 1, "classes": ["bowl", "vase"], "threads": 1}, "filter": TINY_FILTER}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(PIPELINE))
    run(["git", "init", "-q"], tmp_path)
    run(DVC + ["init", "-q"], tmp_path)
    run(DVC + ["repro", "-q"], tmp_path)
    run(["git", "add", "-A"], tmp_path)
    run(["git", "commit", "-qm", "baseline"], tmp_path)
    assert (tmp_path / ".kiln/ran").read_text().split() == ["raw", "filter", "after"]
    (tmp_path / ".kiln/ran").write_text("")
    run(DVC + ["exp", "run", "-S", "filter.filters.object.threshold=0.6"], tmp_path)
    assert (tmp_path / ".kiln/ran").read_text().split() == ["filter", "after"]
