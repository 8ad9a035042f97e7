"""dcgan, vae and autoencoder through the real train/evaluate stage drivers on tiny shards:
each trains, checkpoints, resumes after a kill, evaluates and draws its pictures."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from generative_toy import write_shards
import stages.evaluate.__main__ as evaluate_stage
from stages.families._shared import gen as genbase
import stages.train.__main__ as train_stage
from stages.common.schema import ParamsError
from tests.conftest import key_line

REPO = Path(__file__).resolve().parents[1]

TINY = {
    "dcgan": {"image_size": 32, "epochs": 1, "gen_width": 8, "disc_width": 8, "noise_dim": 8, "batch_size": 16,
              "grid_per_class": 4},
    "vae": {"image_size": 32, "epochs": 1, "widths": [8, 16, 32], "latent_dim": 4, "batch_size": 16,
            "perceptual_net": "mobilenet_v2", "kl_warmup_epochs": 1},
    "autoencoder": {"image_size": 32, "epochs": 1, "widths": [8, 16, 32], "code_channels": 4, "batch_size": 16},
}
TINY_EVAL = {
    "dcgan": {"feature_size": 64, "kid_subsets": 3, "grid_per_class": 4},
    "vae": {"feature_size": 64, "kid_subsets": 3, "grid": 4, "traverse_steps": 5},
    "autoencoder": {"grid": 4},
}


def write_params(root: Path, train_overrides: dict | None = None, eval_overrides: dict | None = None) -> None:
    train = {k: {**v, **(train_overrides or {}).get(k, {})} for k, v in TINY.items()}
    evaluate = {k: {**v, **(eval_overrides or {}).get(k, {})} for k, v in TINY_EVAL.items()}
    params = yaml.safe_load((REPO / "params.yaml").read_text())   # the other sections as shipped
    params["base"].update(seed=3, image_size=32, device="cpu", threads=1)
    params.update(families=list(TINY), train=train, evaluate=evaluate)
    (root / "params.yaml").write_text(yaml.safe_dump(params))


@pytest.fixture()
def workdir(tmp_path, monkeypatch):
    """A repo-like directory: toy shards in data/, params.yaml, and cwd set to it."""
    write_shards(tmp_path / "data", n_train=32, n_test=24, size=32)
    write_params(tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture()
def fake_classifier(workdir, monkeypatch):
    """A stand-in for the lead's classifier that calls every image 'vase' (index 1)."""
    import stages.families.dcgan.evaluate as dcgan_evaluate

    def load_classifier(path, device):
        assert Path(path) == Path("models/classifier/model.pt")
        model = lambda x: torch.tensor([[0.0, 1.0]]).repeat(len(x), 1)   # noqa: E731
        return model, ["bowl", "vase"], lambda images: images.float() / 255

    monkeypatch.setattr(dcgan_evaluate, "load_classifier", load_classifier)   # what dcgan's evaluate calls
    (workdir / "models/classifier").mkdir(parents=True)
    (workdir / "models/classifier/model.pt").write_bytes(b"stand-in")


def train(family: str) -> None:
    train_stage.main([family, "--train", "data/train.pt", "--val", "data/val.pt"])


def evaluate(family: str, with_train: bool = False) -> dict:
    evaluate_stage.main([family, "--test", "data/test.pt"] + (["--train", "data/train.pt"] if with_train else []))
    return json.loads(Path(f"metrics/eval/{family}/metrics.json").read_text())[family]


def assert_png(path: Path) -> None:
    with Image.open(path) as img:
        assert img.format == "PNG" and img.width > 16 and img.height > 16


@pytest.mark.parametrize("family", list(TINY))
def test_family_trains_to_a_plain_checkpoint_and_logs_pictures(workdir, family):
    train(family)
    ckpt = torch.load(workdir / f"models/{family}/model.pt", weights_only=True)   # no pickled modules
    assert ckpt["classes"] == ["bowl", "vase"] and ckpt["epoch"] == 1
    assert ckpt["config"]["image_size"] == 32
    assert not (workdir / f".kiln/resume/{family}.pt").exists()   # removed once training finished
    logged = json.loads((workdir / f"metrics/train/{family}/metrics.json").read_text())
    assert logged[family] and "epoch_seconds" not in logged   # model metrics only, under the family
    pictures = list((workdir / f"metrics/train/{family}/plots/images").rglob("*.png"))
    assert pictures, "no per-epoch picture logged through dvclive"
    assert_png(pictures[0])


@pytest.mark.parametrize("family", list(TINY))
def test_training_resumes_after_a_kill_and_restarts_when_params_change(workdir, monkeypatch, family, capsys):
    write_params(workdir, {family: {"epochs": 2}})
    real_save = genbase.save_resume

    def killed_after_first_epoch(ctx, state):
        real_save(ctx, state)
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(genbase, "save_resume", killed_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(family)
    assert torch.load(f".kiln/resume/{family}.pt", weights_only=True)["epoch"] == 1
    monkeypatch.setattr(genbase, "save_resume", real_save)
    train(family)
    assert "resuming after epoch 1" in capsys.readouterr().out
    steps = (workdir / f"metrics/train/{family}/plots/metrics/epoch_seconds.tsv").read_text().splitlines()
    assert len(steps) == 1 + 2            # header + epochs 1 (before the kill) and 2 (after)
    assert torch.load(f"models/{family}/model.pt", weights_only=True)["epoch"] == 2
    # a resume file from other params is ignored
    monkeypatch.setattr(genbase, "save_resume", killed_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(family)
    monkeypatch.setattr(genbase, "save_resume", real_save)
    write_params(workdir, {family: {"epochs": 2, "lr": 0.0005}})
    train(family)
    assert "starting afresh" in capsys.readouterr().out


def test_dcgan_evaluates_fid_against_a_baseline_and_class_accuracy(workdir, fake_classifier):
    train("dcgan")
    metrics = evaluate("dcgan")
    for key in ("fid_mobilenet_v2", "kid_mobilenet_v2", "fid_mobilenet_v2_baseline", "kid_mobilenet_v2_baseline"):
        assert math.isfinite(metrics[key])
    # the stand-in calls everything a vase: the toy test shard is half vases
    assert metrics["class_accuracy"] == pytest.approx(0.5)
    assert metrics["class_accuracy_vase"] == 1.0 and metrics["class_accuracy_bowl"] == 0.0
    for name in ("samples", "real", "baseline"):
        assert_png(workdir / f"metrics/eval/dcgan/plots/{name}.png")
    for name in ("bowl", "vase"):   # one looping interpolation per class
        with Image.open(workdir / f"metrics/eval/dcgan/plots/interpolation_{name}.gif") as gif:
            assert gif.n_frames > 8
    assert not (workdir / "metrics/eval/dcgan/plots/neighbours.png").exists()   # needs --train


def test_dcgan_shows_nearest_training_neighbours_and_scores_memorisation(workdir, fake_classifier):
    train("dcgan")
    metrics = evaluate("dcgan", with_train=True)
    assert metrics["nn_distance"] > 0 and metrics["nn_distance_held_out"] > 0
    assert metrics["nn_distance_ratio"] == pytest.approx(metrics["nn_distance"] / metrics["nn_distance_held_out"])
    assert_png(workdir / "metrics/eval/dcgan/plots/neighbours.png")


def test_dcgan_small_data_recipe_trains_and_samples_from_the_ema(workdir, fake_classifier):
    from stages.families.dcgan.core import load_gan

    write_params(workdir, {"dcgan": {"spectral_norm": True, "diff_augment": ["color", "translation", "cutout"],
                                     "ema_decay": 0.999, "lr_d": 4e-4, "precision": "auto"}})
    train("dcgan")
    gans, ckpt = load_gan(workdir / "models/dcgan/model.pt", "cpu")
    assert "generators_ema" in ckpt and gans.ema_steps["all"] > 0
    assert math.isfinite(evaluate("dcgan")["fid_mobilenet_v2"])


def test_dcgan_evaluate_without_a_classifier_says_which_file_is_missing(workdir, capsys):
    train("dcgan")
    capsys.readouterr()   # drop training's progress output
    with pytest.raises(SystemExit) as exit_info:
        train_stage.run_stage(evaluate_stage.main, ["dcgan", "--test", "data/test.pt"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "models/classifier/model.pt" in err[0]


def test_vae_evaluates_reconstruction_disentanglement_and_draws_traversals(workdir):
    train("vae")
    metrics = evaluate("vae")
    assert 0 <= metrics["recon_mse"] <= 1 and metrics["recon_psnr"] > 0 and -1 <= metrics["recon_ssim"] <= 1
    assert 0 <= metrics["mig"] <= 1 and "dci_disentanglement" in metrics
    assert set(metrics["mig_per_factor"]) == {"height", "belly", "neck", "hue", "shift"}
    assert math.isfinite(metrics["fid_mobilenet_v2"])
    for name in ("reconstructions", "samples", "traversals"):
        assert_png(workdir / f"metrics/eval/vae/plots/{name}.png")
    with Image.open(workdir / "metrics/eval/vae/plots/traversals.png") as img:
        rows = round((img.height - 30 - 4) / (64 + 4))   # title and column values (30 px), 32 px tiles shown at 64
    assert rows == TINY["vae"]["latent_dim"]   # one row per latent dimension


def test_autoencoder_evaluates_clusters_and_draws_latent_plots(workdir):
    train("autoencoder")
    metrics = evaluate("autoencoder")
    assert 0 <= metrics["kmeans_nmi"] <= 1 and -1 <= metrics["kmeans_ari"] <= 1
    assert metrics["code_dim"] == 4 * 4 * 4   # 4 channels at 32 / 2**3 = 4 px: no flattened full map
    for name in ("reconstructions", "latent_pca", "latent_kmeans"):
        assert_png(workdir / f"metrics/eval/autoencoder/plots/{name}.png")


@pytest.mark.parametrize("key, value, message", [
    ("image_size", 48, "train.dcgan.image_size"),
    ("label_smoothing", [0.9, 0.8], "train.dcgan.label_smoothing"),
    ("diff_augment", ["flip"], "train.dcgan.diff_augment"),
    ("coarse_size", 64, "train.dcgan.coarse_size"),
])
def test_bad_dcgan_params_name_the_key(workdir, key, value, message):
    from stages.families import load_family_params

    write_params(workdir, {"dcgan": {key: value}})
    with pytest.raises(ParamsError) as err:
        load_family_params("params.yaml", "dcgan", ("train",))
    assert err.value.path == message
    assert err.value.line == key_line(workdir / "params.yaml", message)


def test_vae_widths_that_do_not_divide_the_image_size_are_rejected(workdir):
    from stages.families import load_family_params

    write_params(workdir, {"vae": {"image_size": 40, "widths": [8, 16, 32, 64]}})
    with pytest.raises(ParamsError) as err:
        load_family_params("params.yaml", "vae", ("train",))
    assert err.value.path == "train.vae.widths"
    assert err.value.line == key_line(workdir / "params.yaml", "train.vae.widths")
