"""Pure parts of the generative families: the fields projection the DCGAN is conditioned on,
and the coarse colour field the DCGAN generator and the VAE decoder paint."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from stages.families._shared.gen import FieldScaler


def shape_fields(n: int = 300, seed: int = 0) -> torch.Tensor:
    """(n, 12) fields driven by 3 hidden numbers plus a little noise, like the demo's profiles."""
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, 3, generator=gen)
    mixing = torch.randn(3, 12, generator=gen)
    return 0.5 + 0.1 * hidden @ mixing + 0.001 * torch.randn(n, 12, generator=gen)


def test_field_scaler_projects_on_whitened_principal_axes_and_round_trips():
    fields = shape_fields()
    scaler = FieldScaler.fit(fields, components=3)
    out = scaler(fields)
    assert out.shape == (300, 3) and scaler.dim == 3
    assert torch.allclose(out.mean(0), torch.zeros(3), atol=0.05)
    assert torch.allclose(out.std(0), torch.ones(3), atol=0.1)          # whitened
    assert torch.allclose(torch.corrcoef(out.T), torch.eye(3), atol=0.05)  # decorrelated
    restored = FieldScaler.from_state(scaler.state())
    assert torch.allclose(restored(fields), out, atol=1e-5)


def test_field_scaler_clips_outliers_and_standardises_without_components():
    fields = shape_fields()
    scaler = FieldScaler.fit(fields, components=2)
    odd = fields[:1] + 10.0                                             # a profile far off the training set
    assert scaler(odd).abs().max() <= scaler.clip
    plain = FieldScaler.fit(fields)                                     # components 0: every column standardised
    assert plain(fields).shape == (300, 12) and plain.dim == 12
    assert torch.allclose(plain(fields).std(0), torch.ones(12), atol=1e-3)
    assert FieldScaler.fit(fields, components=12).components is None   # K >= F: nothing to project


def test_dcgan_generator_coarse_field_paints_a_smooth_colour_layer():
    from stages.families.dcgan.core.nets import Generator

    gen = Generator(noise_dim=8, cond_dim=2, size=32, width=8, coarse_size=4)
    last = gen.net[-1]
    torch.nn.init.zeros_(last.weight), torch.nn.init.zeros_(last.bias)  # silence the conv stack
    noise, cond = torch.randn(5, 8), torch.eye(2)[[0, 1, 0, 1, 0]]
    out = gen(noise, cond)
    assert out.shape == (5, 3, 32, 32) and out.abs().max() < 1
    field = gen.coarse.linear(torch.cat([noise, cond], 1)).view(5, 3, 4, 4)
    expected = torch.tanh(F.interpolate(field, size=(32, 32), mode="bilinear", align_corners=False))
    assert torch.allclose(out, expected, atol=1e-6) and out.std() > 0   # the colour comes from the field alone
    assert Generator(8, 2, 32, 8)(noise, cond).shape == (5, 3, 32, 32)    # coarse_size 0: convs only


@pytest.mark.parametrize("coarse_size", [0, 8])
def test_vae_decoder_adds_the_coarse_colour_field_before_the_tanh(coarse_size):
    from stages.families.vae.core import BetaVAE, VAETrain

    model = BetaVAE(VAETrain(image_size=32, latent_dim=4, widths=[8, 16, 32], coarse_size=coarse_size)).eval()
    last = model.decode_map[-2]                                          # the final transposed conv
    torch.nn.init.zeros_(last.weight), torch.nn.init.zeros_(last.bias)
    z = torch.randn(3, 4)
    with torch.no_grad():
        out = model.decode(z)
    assert out.shape == (3, 3, 32, 32)
    if coarse_size:
        field = model.coarse.linear(z).view(3, 3, 8, 8)
        expected = torch.tanh(F.interpolate(field, size=(32, 32), mode="bilinear", align_corners=False))
        assert torch.allclose(out, expected, atol=1e-6) and out.std() > 0
    else:
        assert torch.count_nonzero(out) == 0                             # nothing left to draw with
