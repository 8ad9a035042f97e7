"""params.yaml validation: one clear line naming the key, exit code 2, nothing touched."""
from __future__ import annotations

import copy
import subprocess
import sys

import pytest

from stages.common.params import Base, load_params, read_params
from stages.common.schema import ParamsError
from tests.conftest import REPO, key_line, load_all_params, stage_env, write_params


def params_error(path, data: dict) -> ParamsError:
    with pytest.raises(ParamsError) as info:
        load_all_params(write_params(path, data))
    return info.value


def test_repo_params_are_valid(repo_params):
    params = load_all_params(REPO / "params.yaml")
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
    (lambda d: d["filter"]["filters"]["object"].update(max_examples=-1), "filter.filters.object.max_examples"),
])
def test_bad_values_name_their_key(tmp_path, repo_params, mutate, path):
    data = copy.deepcopy(repo_params)
    mutate(data)
    file = tmp_path / "params.yaml"
    err = params_error(file, data)
    assert err.path == path
    assert err.line == key_line(file, path) and err.file == str(file)


def test_message_says_what_is_allowed(tmp_path, repo_params):
    data = copy.deepcopy(repo_params)
    data["split"]["rebalance"]["mode"] = "median"
    with pytest.raises(ParamsError, match="one of 'none' | 'mean'"):
        load_all_params(write_params(tmp_path / "params.yaml", data))


def test_invalid_yaml_names_the_line(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("base:\n  seed: [1, 2\nsplit: {}\n")
    with pytest.raises(ParamsError, match="not valid YAML") as info:
        load_params(path, {"base": Base})
    assert info.value.line == 3 and info.value.file == str(path)   # where the flow list breaks off


def test_error_names_the_line_of_the_key_or_its_nearest_parent(tmp_path):
    from stages.split.config import Split

    path = tmp_path / "params.yaml"
    path.write_text("# comment\nbase:\n  seed: 1\n\nsplit:\n  rebalance:\n    mode: count\n"
                    "  fractions:\n    train: 0.7\n")
    with pytest.raises(ParamsError) as info:   # count is absent: its parent's line
        load_params(path, {"base": Base, "split": Split})
    assert (info.value.path, info.value.line) == ("split.rebalance.count", 6)
    path.write_text("base:\n  seed: 1\nsplit:\n  fractions:\n    val: 0.1\n    train: -0.5\n")
    with pytest.raises(ParamsError) as info:
        load_params(path, {"split": Split})
    assert (info.value.path, info.value.line) == ("split.fractions.train", 6)


def test_a_stage_reads_only_its_sections(tmp_path, repo_params):
    from stages.split.config import Split

    data = copy.deepcopy(repo_params)
    data["train"]["classifier"]["lr"] = "fast"   # not split's business
    params = load_params(write_params(tmp_path / "params.yaml", data), {"base": Base, "split": Split})
    assert vars(params).keys() == {"base", "split"}
    data["extra"] = {}                            # an unknown section stops every stage
    with pytest.raises(ParamsError, match="unknown section") as info:
        read_params(write_params(tmp_path / "params.yaml", data))
    assert info.value.path == "extra" and info.value.line == key_line(tmp_path / "params.yaml", "extra")


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
    line = key_line(params, "split.fractions")
    assert lines == [f"kiln: error: {params}:{line}: split.fractions: train + val + test must sum to 1 (got 1.15)"]
    assert (out / "keep.txt").read_text() == "old output"
