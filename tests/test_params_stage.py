"""The params stage: the whole file validated once, one normalised file per stage."""
from __future__ import annotations

import json

import pytest

import stages.params.__main__ as params_stage
from stages.common.schema import ParamsError
from tests.conftest import REPO, write_params


def test_every_stage_gets_only_the_values_it_reads(tmp_path):
    out = tmp_path / "params"
    params_stage.main(["--out", str(out), "--params", str(REPO / "params.yaml")])
    split = json.loads((out / "split.json").read_text())
    assert sorted(split) == ["base", "split"] and split["split"]["store_size"] == 256
    train = json.loads((out / "train@classifier.json").read_text())
    assert sorted(train) == ["augment.online", "base", "split.class_weights", "train.classifier"]
    assert json.loads((out / "evaluate@vae.json").read_text())["evaluate.vae"]["mig_bins"] == 10


def test_defaults_written_out_or_left_out_give_the_same_files(tmp_path, repo_params):
    """A stage reruns on a changed value, not on a key spelled out at its default."""
    short = dict(repo_params, split={"fractions": repo_params["split"]["fractions"]})
    for name, data in (("full", repo_params), ("short", short)):
        params_stage.main(["--out", str(tmp_path / name), "--params",
                           str(write_params(tmp_path / f"{name}.yaml", data))])
    assert (tmp_path / "full/split.json").read_bytes() == (tmp_path / "short/split.json").read_bytes()


def test_a_typo_anywhere_stops_it_and_writes_nothing(tmp_path, repo_params):
    bad = dict(repo_params, crawl={**repo_params["crawl"], "retires": 3})
    with pytest.raises(ParamsError, match="crawl.retires: unknown key"):
        params_stage.main(["--out", str(tmp_path / "out"), "--params", str(write_params(tmp_path / "p.yaml", bad))])
    assert not (tmp_path / "out").exists()
