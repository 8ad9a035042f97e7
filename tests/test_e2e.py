"""End to end: the real dvc.yaml on tiny params inside a temporary git + DVC repository."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, copy_pipeline, key_line, stage_env

pytestmark = pytest.mark.e2e


def tiny_params() -> dict:
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    data["base"]["image_size"] = 32
    # the corpus the crawl renders (engine local)
    data["demo"].update(n_per_class=60, image_size=48, distractors_per_class=6, junk_per_class=12)
    data["augment"]["per_class"] = 60
    shipped_net = data["filter"]["filters"]["object"]["net"]                             # the default's probe,
    tiny_net = {**shipped_net, "arch": "mobilenet_v2", "image_size": 32, "hidden": [], "epochs": 50}   # smaller
    # mechanics, not quality: a lenient vote keeps most pots after a few epochs of tiny members
    data["filter"]["filters"]["object"].update(members=2, net=tiny_net, vote="mean", threshold=0.2)
    data["filter"]["contact_sheet"] = 8
    data["train"]["classifier"].update(widths=[8, 16, 32], hidden=[32], epochs=4, batch_size=32, patience=0)
    data["hpo"]["classifier"].update(n_calls=2, n_initial_points=1, trial_epochs=1,
                                     trial={"widths": [8, 16, 32], "hidden": [32], "batch_size": 32})
    for family in data["families"]:
        tiny = TINY_FAMILY_PARAMS.get(family, {})
        data["train"][family].update(tiny.get("train", {}))
    return data


# Families beyond the classifier shrink their own defaults for the test.
TINY_FAMILY_PARAMS: dict[str, dict] = {
    "dcgan": {"train": {"image_size": 32, "gen_width": 8, "disc_width": 8, "noise_dim": 8, "epochs": 1}},
    "vae": {"train": {"image_size": 32, "widths": [8, 16, 32], "latent_dim": 4, "epochs": 1}},
    "autoencoder": {"train": {"image_size": 32, "widths": [8, 16, 32], "code_channels": 4, "epochs": 1}},
}


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=stage_env(), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def retrained_classifier(families: list[str]) -> set[str]:
    """A new classifier reruns its train, `uses` (it hashes the models evaluations read) and the
    evaluations that read it: its own and dcgan's (the samples' class accuracy), never
    evaluate@vae or evaluate@autoencoder."""
    return {"params", "train@classifier", "uses", "evaluate@classifier"} | (
        {"evaluate@dcgan"} if "dcgan" in families else set())


def ran_stages(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("kiln-e2e")
    copy_pipeline(root)
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    (root / ".gitignore").write_text("/.kiln/\n__pycache__/\n")
    run(["git", "init", "-q"], root)
    run(["git", "config", "user.email", "test@kiln"], root)
    run(["git", "config", "user.name", "kiln test"], root)
    run(["dvc", "init", "-q"], root)
    run(["dvc", "config", "core.analytics", "false"], root)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "tiny kiln project"], root)
    proc = run(["dvc", "repro"], root)
    (root / "first_repro.log").write_text(proc.stdout)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "first repro"], root)
    return root


def test_repro_runs_the_chain_and_writes_outputs(project):
    log = (project / "first_repro.log").read_text()
    assert {"crawl", "filter", "split", "augment", "hpo@classifier", "train@classifier",
            "evaluate@classifier"} <= ran_stages(log)
    raw = (project / "data/raw/manifest.jsonl").read_text().splitlines()
    kept = (project / "data/filtered/manifest.jsonl").read_text().splitlines()
    assert 0 < len(kept) < len(raw)
    assert json.loads((project / "metrics/filter.json").read_text())
    assert json.loads((project / "metrics/hpo/classifier/metrics.json").read_text())["classifier"]["hpo"]["n_calls"] == 2
    metrics = json.loads((project / "metrics/eval/classifier/metrics.json").read_text())["classifier"]
    assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["images"] > 0
    assert (project / "metrics/eval/classifier/plots/confusion.png").is_file()
    assert (project / "metrics/augment/preview.png").is_file()
    assert (project / "models/classifier/model.pt").is_file()
    train_log = json.loads((project / "metrics/train/classifier/metrics.json").read_text())
    assert train_log["step"] == 3  # four epochs logged by dvclive


def test_second_repro_runs_nothing(project):
    proc = run(["dvc", "repro"], project)
    assert ran_stages(proc.stdout) == set()
    assert run(["dvc", "status"], project).stdout.strip().endswith("up to date.")


def test_exp_run_with_new_lr_reruns_only_train_and_evaluate(project):
    proc = run(["dvc", "exp", "run", "-S", "train.classifier.lr=0.01", "-n", "lr01"], project)
    assert ran_stages(proc.stdout) == retrained_classifier(tiny_params()["families"])
    shown = json.loads(run(["dvc", "exp", "show", "--json"], project).stdout)
    names = json.dumps(shown)
    assert "lr01" in names and "0.01" in names and "accuracy" in names


def test_filter_threshold_reruns_filter_and_what_follows_only(project):
    proc = run(["dvc", "exp", "run", "-S", "filter.filters.object.threshold=0.25", "-n", "thr025"], project)
    ran = ran_stages(proc.stdout)
    assert "filter" in ran and "crawl" not in ran


def test_use_hpo_trains_with_the_best_params(project):
    from stages.shared.checkpoint import load_checkpoint

    proc = run(["dvc", "exp", "run", "-S", "train.classifier.use_hpo=true", "-n", "hpo"], project)
    assert ran_stages(proc.stdout) == retrained_classifier(tiny_params()["families"])
    best = json.loads((project / "models/hpo/classifier/best_params.json").read_text())["params"]
    trained = load_checkpoint(project / "models/classifier/model.pt")["config"]
    assert best and all(trained[key] == value for key, value in best.items())


def test_bad_params_stop_with_one_line_and_keep_outputs(project):
    params = project / "params.yaml"
    good = params.read_text()
    before = (project / "data/split/train.pt").read_bytes()
    data = yaml.safe_load(good)
    data["split"]["fractions"]["val"] = 0.5
    params.write_text(yaml.safe_dump(data, sort_keys=False))
    line = key_line(params, "split.fractions")   # in the file split read
    try:
        proc = run(["dvc", "repro", "split"], project, check=False)
    finally:
        params.write_text(good)
    assert proc.returncode != 0
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("kiln: error:")]
    assert errors == [f"kiln: error: params.yaml:{line}: split.fractions: train + val + test must sum to 1 (got 1.35)"]
    assert (project / "data/split/train.pt").read_bytes() == before


def test_kill_9_during_training_then_repro_resumes(project):
    data = yaml.safe_load((project / "params.yaml").read_text())
    data["train"]["classifier"]["epochs"] = 30  # long enough to be killed mid-way
    (project / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    resume = project / ".kiln/resume/classifier.pt"
    model = project / "models/classifier/model.pt"
    before = model.read_bytes()
    proc = subprocess.Popen(["dvc", "repro", "train@classifier"], cwd=project, env=stage_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while not resume.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert resume.exists(), "training never wrote an epoch checkpoint"
    # training stages its checkpoints under .kiln/: the output is the old model or none
    # (DVC removed it before the run; dvc checkout brings it back), never a half-trained one
    assert not model.exists() or model.read_bytes() == before
    done = run(["dvc", "repro"], project)
    assert "resuming after epoch" in done.stdout
    assert run(["dvc", "status"], project).stdout.strip().endswith("up to date.")
    assert not resume.exists()


def test_going_back_to_old_params_restores_from_the_run_cache(project):
    for lr in ("0.004", "0.006", "0.004"):
        proc = run(["dvc", "exp", "run", "-S", f"train.classifier.lr={lr}"], project)
    assert "train@classifier" not in ran_stages(proc.stdout)
    assert "Stage 'train@classifier' is cached" in proc.stdout


def test_a_typo_in_the_crawl_section_deletes_nothing(project):
    params = project / "params.yaml"
    good = params.read_text()
    raw_files = sorted(p.name for p in (project / "data/raw").rglob("*"))
    params.write_text(good.replace("crawl:\n", "crawl:\n  retires: 3\n", 1))
    try:
        proc = run(["dvc", "repro"], project, check=False)
    finally:
        params.write_text(good)
    assert proc.returncode != 0 and "crawl.retires: unknown key" in proc.stdout + proc.stderr
    assert sorted(p.name for p in (project / "data/raw").rglob("*")) == raw_files


def test_rerunning_split_gives_the_same_bytes_and_nothing_downstream_changes(project):
    run(["dvc", "repro", "-f", "-s", "split"], project)
    status = run(["dvc", "status"], project).stdout
    assert status.strip().endswith("up to date."), status
