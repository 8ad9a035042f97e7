"""Vote modes and the cascade, on cases where they disagree; members train independently."""
import numpy as np
import pytest
import torch

from stages.filter.ensemble import bootstrap_index, ensemble_probs, member_inputs, run_cascade, train_member, vote
from stages.filter.config import FilterNet

# three members, five images: columns are images
PROBS = np.array([
    [0.95, 0.95, 0.95, 0.20, 0.99],
    [0.95, 0.95, 0.50, 0.30, 0.99],
    [0.95, 0.50, 0.50, 0.99, 0.85],
])


def test_vote_modes_disagree():
    # image 1: two of three sure -> majority keeps, unanimity does not; mean 0.80 < 0.9
    # image 4: all confident but one at 0.85 -> only 'all' rejects; mean 0.943 keeps
    assert vote(PROBS, "all", 0.9).tolist() == [True, False, False, False, False]
    assert vote(PROBS, "majority", 0.9).tolist() == [True, True, False, False, True]
    assert vote(PROBS, "mean", 0.9).tolist() == [True, False, False, False, True]
    # a lower threshold: the mean keeps image 3 (0.497 < 0.5 rejects, 0.49 threshold keeps)
    assert vote(PROBS, "mean", 0.49).tolist() == [True, True, True, True, True]
    assert vote(PROBS, "all", 0.49).tolist() == [True, True, True, False, True]


def test_majority_needs_more_than_half():
    two_members = np.array([[0.95, 0.95], [0.1, 0.95]])
    assert vote(two_members, "majority", 0.9).tolist() == [False, True]


def test_vote_rejects_bad_input():
    with pytest.raises(ValueError):
        vote(PROBS, "unanimous", 0.9)
    with pytest.raises(ValueError):
        vote(PROBS[0], "all", 0.9)


def test_cascade_order_and_visibility():
    seen = {}

    def make(name, keep_set):
        def decide(index):
            seen[name] = index.tolist()
            return np.array([i in keep_set for i in index])
        return decide

    alive = np.array([True, True, True, True, False])   # image 4 rejected upstream
    result = run_cascade([("object", make("object", {0, 1, 2})), ("usable", make("usable", {0, 3}))], 5, alive)
    assert seen["object"] == [0, 1, 2, 3]
    assert seen["usable"] == [0, 1, 2]           # only what 'object' kept
    assert result == [None, "usable", "usable", "object", None]
    # reversed order: image 3 is now rejected by 'object' after passing 'usable', 1 and 2 by 'usable'
    seen.clear()
    result = run_cascade([("usable", make("usable", {0, 3})), ("object", make("object", {0, 1, 2}))], 5, alive)
    assert result == [None, "usable", "usable", "object", None]
    assert seen["object"] == [0, 3]


def test_bootstrap_keeps_both_labels_and_differs_by_seed():
    labels = np.array([1] * 50 + [0] * 5)
    a = bootstrap_index(labels, np.random.default_rng(1))
    b = bootstrap_index(labels, np.random.default_rng(2))
    assert len(a) == len(labels) and (labels[a] == 0).sum() == 5
    assert not np.array_equal(np.sort(a), np.sort(b))


def test_members_learn_a_separable_rule_and_differ():
    # keep = bright images, reject = dark ones: a rule one epoch can learn
    gen = torch.Generator().manual_seed(0)
    bright = torch.randint(150, 255, (48, 3, 16, 16), generator=gen, dtype=torch.uint8)
    dark = torch.randint(0, 60, (48, 3, 16, 16), generator=gen, dtype=torch.uint8)
    images, labels = torch.cat([bright, dark]), np.array([1] * 48 + [0] * 48)
    cfg = FilterNet(arch="bnconv", image_size=16, widths=[8, 16], hidden=[16], epochs=6, batch_size=16, lr=0.01,
                    weight_decay=0.0001)
    states = [train_member(images, labels, cfg, seed, torch.device("cpu")) for seed in (1, 2)]
    probs = ensemble_probs(states, cfg, images, torch.device("cpu"))    # (2, 96)
    assert probs.shape == (2, 96)
    assert (probs[:, :48].mean(axis=1) > 0.8).all() and (probs[:, 48:].mean(axis=1) < 0.2).all()
    assert not torch.equal(states[0]["head.0.weight"], states[1]["head.0.weight"])


def test_linear_probe_members_fit_features_and_keep_their_standardiser():
    """arch mobilenet_v2 with hidden []: L-BFGS logistic regression on (N, D) features."""
    gen = torch.Generator().manual_seed(0)
    keep = torch.randn(60, 1280, generator=gen) + 1.5 * (torch.arange(1280) < 200)    # shifted in 200 dims
    reject = torch.randn(30, 1280, generator=gen)
    features, labels = torch.cat([keep, reject]) * 3 + 5, np.array([1] * 60 + [0] * 30)
    cfg = FilterNet(arch="mobilenet_v2", image_size=32, hidden=[], epochs=100, weight_decay=0.01)
    states = [train_member(features, labels, cfg, seed, torch.device("cpu")) for seed in (1, 2)]
    assert (states[0]["mean"] - 5).abs().mean() < 1.0 and (states[0]["std"] - 3).abs().mean() < 0.5
    probs = ensemble_probs(states, cfg, features, torch.device("cpu"))            # (2, 90)
    assert ((probs[:, :60] >= 0.5).mean() > 0.95) and ((probs[:, 60:] < 0.5).mean() > 0.95)
    assert not torch.equal(states[0]["head.0.weight"], states[1]["head.0.weight"])   # own bootstrap


BNCONV = FilterNet(arch="bnconv", image_size=32, hidden=[64], epochs=160, weight_decay=0.0001)
PROBE = FilterNet(arch="mobilenet_v2", image_size=32, hidden=[], epochs=200, weight_decay=0.001)


def test_member_inputs_are_pooled_pretrained_features_for_a_probe():
    images = torch.randint(0, 255, (5, 3, 32, 32), dtype=torch.uint8)
    assert member_inputs(images, BNCONV, torch.device("cpu")) is images      # bnconv reads pixels
    features = member_inputs(images, PROBE, torch.device("cpu"))
    assert features.shape == (5, 1280) and features.dtype == torch.float32


def test_linear_probe_standardised_once_reaches_the_same_optimum():
    """Standardising once outside the L-BFGS closure gives the weights of standardising at
    every evaluation (the former code, written out here as the reference)."""
    from stages.filter.ensemble import ProbeHead, fit_linear_probe

    gen = torch.Generator().manual_seed(3)
    features = torch.cat([torch.randn(40, 64, generator=gen) + 0.8 * (torch.arange(64) < 10),
                          torch.randn(25, 64, generator=gen)]) * 2 + 1
    labels = torch.tensor([1.0] * 40 + [0.0] * 25)
    cfg = FilterNet(arch="mobilenet_v2", image_size=32, hidden=[], epochs=60, weight_decay=0.01)

    def fresh() -> ProbeHead:
        torch.manual_seed(7)
        model = ProbeHead(64, [], 0.0)
        model.fit_standardiser(features)
        return model

    reference = fresh()
    share = labels.mean()
    weight = torch.where(labels > 0.5, 0.5 / share, 0.5 / (1 - share))
    opt = torch.optim.LBFGS(reference.parameters(), lr=1.0, max_iter=cfg.epochs, history_size=20,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        logits = reference(features)          # forward standardises: a new N x D copy per evaluation
        loss = (torch.nn.functional.binary_cross_entropy_with_logits(logits.squeeze(1), labels, reduction="none")
                * weight).mean() + 0.5 * cfg.weight_decay * reference.head[-1].weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    model = fresh()
    state = fit_linear_probe(model, model.standardise_(features.clone()), labels, cfg, torch.device("cpu"))
    assert torch.allclose(state["head.0.weight"], reference.head[0].weight, atol=1e-5)
    assert torch.allclose(state["head.0.bias"], reference.head[0].bias, atol=1e-5)
    assert torch.equal(state["mean"], reference.mean) and torch.equal(state["std"], reference.std)
    model.load_state_dict(state)
    with torch.no_grad():
        probs, reference_probs = (torch.sigmoid(m(features)).squeeze(1) for m in (model, reference))
    assert torch.allclose(probs, reference_probs, atol=1e-6)
    assert ((probs >= 0.5) == labels.bool()).float().mean() > 0.9      # it did learn


def test_member_inputs_take_a_prebuilt_trunk_and_embed_nothing_for_no_images():
    from stages.filter.ensemble import probe_trunk
    images = torch.randint(0, 255, (3, 3, 32, 32), dtype=torch.uint8)
    trunk = probe_trunk(PROBE)
    assert torch.equal(member_inputs(images, PROBE, torch.device("cpu"), trunk),
                       member_inputs(images, PROBE, torch.device("cpu")))
    assert member_inputs(images[:0], PROBE, torch.device("cpu"), trunk).shape == (0, 1280)
