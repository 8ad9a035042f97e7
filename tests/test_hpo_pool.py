"""hpo with n_jobs=2: points asked two at a time, trained in a pool of spawned workers."""
from __future__ import annotations

import json

import yaml

from tests.conftest import write_params
from tests.test_hpo import HPO_CMD, workdir  # noqa: F401  (the fixture)


def test_pool_of_two_workers_finishes_the_search(workdir, monkeypatch, capsys):  # noqa: F811
    import stages.hpo.__main__ as hpo_stage

    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["hpo"]["classifier"].update(n_calls=3, n_jobs=2, trial_epochs=1)
    write_params(workdir / "params.yaml", params)
    monkeypatch.chdir(workdir)
    hpo_stage.main(HPO_CMD[3:])
    assert "3 calls (0 resumed)" in capsys.readouterr().out
    trials = json.loads((workdir / ".kiln/resume/hpo-classifier.json").read_text())["trials"]
    assert [t["call"] for t in trials] == [1, 2, 3] and sum(t["default"] for t in trials) == 1
    assert len({json.dumps(t["params"], sort_keys=True) for t in trials}) == 3   # distinct points
    assert all(t["seconds"] > 0 for t in trials)
