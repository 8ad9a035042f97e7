"""params.yaml validation: one clear line naming the key, exit code 2, nothing touched."""
from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import yaml

from stages.common.params import load_params, parse_params
from stages.common.schema import ParamsError
from tests.conftest import stage_env, write_params


def error_path(data: dict) -> str:
    with pytest.raises(ParamsError) as info:
        parse_params(data)
    return info.value.path


def test_repo_params_are_valid(repo_params):
    params = parse_params(repo_params)
    assert params.base.classes == ["bowl", "vase"]
    assert set(params.train) == set(params.families)


@pytest.mark.parametrize("mutate, path", [
    (lambda d: d["split"].update(colour=1), "split.colour"),
    (lambda d: d["split"]["fractions"].update(train=-0.1), "split.fractions.train"),
    (lambda d: d["split"]["fractions"].update(train=0.5), "split.fractions"),
    (lambda d: d.update(families=["classifier", "gpt"]), "families.1"),
    (lambda d: d["train"].update(gpt={}), "train.gpt"),
    (lambda d: d["augment"]["offline"].update(sharpen={"p": 0.5}), "augment.offline.sharpen"),
    (lambda d: d["augment"]["offline"]["hflip"].update(p=1.5), "augment.offline.hflip.p"),
    (lambda d: d["train"]["classifier"].update(lr="fast"), "train.classifier.lr"),
    (lambda d: d["train"]["classifier"].update(epochs=True), "train.classifier.epochs"),
    (lambda d: d["split"]["rebalance"].update(mode="median"), "split.rebalance.mode"),
    (lambda d: d.update(extra={}), "extra"),
])
def test_bad_values_name_their_key(repo_params, mutate, path):
    data = copy.deepcopy(repo_params)
    mutate(data)
    assert error_path(data) == path


def test_message_says_what_is_allowed(repo_params):
    data = copy.deepcopy(repo_params)
    data["split"]["rebalance"]["mode"] = "median"
    with pytest.raises(ParamsError, match="one of 'none' | 'mean'"):
        parse_params(data)


def test_invalid_yaml_names_the_line(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("base:\n  seed: [1, 2\n")
    with pytest.raises(ParamsError, match="not valid YAML at line"):
        load_params(path)


def test_stage_exits_2_with_one_line_and_leaves_outputs(tmp_path, repo_params):
    data = copy.deepcopy(repo_params)
    data["split"]["fractions"]["test"] = 0.3  # sums to 1.15
    params = write_params(tmp_path / "params.yaml", data)
    out = tmp_path / "split"
    out.mkdir()
    (out / "keep.txt").write_text("old output")
    proc = subprocess.run([sys.executable, "-m", "stages.split.__main__", "--input", str(tmp_path / "missing.jsonl"),
                           "--out", str(out), "--params", str(params)],
                          capture_output=True, text=True, env=stage_env())
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == ["kiln: error: params.yaml: split.fractions: train + val + test must sum to 1 (got 1.15)"]
    assert (out / "keep.txt").read_text() == "old output"
