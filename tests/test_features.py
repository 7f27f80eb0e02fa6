"""Filterbank features: the reference's golden tensors, lengths, padding, augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import require_shared
from hypothesis import given
from hypothesis import strategies as st

from jasper.features import (
    CutoutAugment,
    FilterbankFeatures,
    SpecAugment,
    mel_filterbank,
    padded_frames,
    vtlp_warp,
    warped_filterbanks,
)

CANONICAL = dict(
    sample_rate=16000,
    window_size=0.02,
    window_stride=0.01,
    window="hann",
    normalize="per_feature",
    n_fft=512,
    n_filt=64,
    dither=1e-5,
    pad_align=16,
)


def test_reference_features_fixture() -> None:
    fx = torch.load(require_shared("fixtures", "reference", "features.pt"), weights_only=True)
    module = FilterbankFeatures(**fx["settings"]).eval()
    audio = fx["audio"].clone()
    feats, lens = module(audio, fx["audio_lens"])
    assert torch.equal(lens, fx["feature_lens"]) and lens.dtype == torch.int32
    assert feats.shape == fx["features"].shape
    assert (feats - fx["features"]).abs().max() < 1e-4
    assert torch.equal(audio, fx["audio"]), "the caller's audio must not change"


def test_mel_filterbank_matches_librosa_checks() -> None:
    fb = mel_filterbank(16000, 512, 64, 0, 8000)
    assert fb.shape == (64, 257)
    assert abs(fb.sum() - 2.0461817) < 1e-5 and abs(fb.max() - 0.0211133) < 1e-6
    assert list(fb[0].nonzero()[0]) == [1, 2]
    nz = fb[63].nonzero()[0]
    assert (nz[0], nz[-1]) == (233, 255)


def test_lengths_and_sizes() -> None:
    module = FilterbankFeatures(**CANONICAL).eval()
    for samples, frames, size in ((16000, 100, 112), (16001, 101, 112), (16159, 101, 112), (16160, 101, 112)):
        feats, lens = module(torch.randn(1, samples), torch.tensor([samples]))
        assert int(lens) == frames and feats.shape[-1] == size


def test_pad_to_max_duration_sizes() -> None:
    for seconds, size in ((2, 208), (7, 704), (16.7, 1680)):
        module = FilterbankFeatures(**CANONICAL, pad_to_max_duration=True, max_duration=seconds).eval()
        feats, _ = module(torch.randn(2, 16000), torch.tensor([16000, 8000]))
        assert feats.shape == (2, 64, size)
        assert module.output_frames(16000) == size


def test_padded_frames() -> None:
    assert (
        padded_frames(201, 16) == 208 and padded_frames(208, 16) == 208 and padded_frames(5, 16, 199) == 208
    )


def test_eval_is_deterministic_and_training_dithers() -> None:
    module = FilterbankFeatures(**CANONICAL)
    audio = torch.randn(2, 8000) * 0.1
    lens = torch.tensor([8000, 6000])
    module.eval()
    a, _ = module(audio, lens)
    b, _ = module(audio, lens)
    assert torch.equal(a, b)
    module.train()
    c, _ = module(audio, lens)
    assert not torch.equal(a, c)
    assert FilterbankFeatures(**CANONICAL, dither_in_eval=True).eval()(audio, lens)[0].ne(a).any()


def test_batch_equals_single_utterance_for_valid_frames() -> None:
    """Normalisation uses each utterance's own frames; only edge frames see batch padding."""
    module = FilterbankFeatures(**CANONICAL).eval()
    long, short = torch.randn(16000) * 0.1, torch.randn(9600) * 0.1
    batch = torch.stack([long, torch.nn.functional.pad(short, (0, 6400))])
    feats, lens = module(batch, torch.tensor([16000, 9600]))
    alone, alone_lens = module(short[None], torch.tensor([9600]))
    assert int(lens[1]) == int(alone_lens[0]) == 60
    assert (feats[1, :, 60:] == 0).all()
    # frames away from the end do not depend on the padding
    assert (feats[1, :, :55] - alone[0, :, :55]).abs().max() < 1e-3


def test_short_audio_does_not_crash() -> None:
    module = FilterbankFeatures(**CANONICAL).eval()
    for n in (1, 100, 256):
        feats, lens = module(torch.randn(1, n), torch.tensor([n]))
        assert torch.isfinite(feats).all() and int(lens) == -(-n // 160)


def test_spec_augment_ranges() -> None:
    torch.manual_seed(0)
    x = torch.ones(64, 64, 300)
    out = SpecAugment(freq_masks=2, max_freq=20, time_masks=2, max_time=75)(x)
    zero_bins = (out == 0).all(dim=2).sum(dim=1)  # fully masked frequency rows per utterance
    zero_frames = (out == 0).all(dim=1).sum(dim=1)
    assert zero_bins.max() <= 40 and zero_frames.max() <= 150
    assert zero_bins.float().mean() > 5 and zero_frames.float().mean() > 20
    assert SpecAugment()(x).eq(1).all(), "no masks configured means no change"


def test_spec_augment_only_in_training() -> None:
    module = FilterbankFeatures(
        **CANONICAL, spec_augment=dict(freq_masks=2, max_freq=20, time_masks=2, max_time=75)
    )
    audio, lens = torch.randn(4, 16000) * 0.1, torch.full((4,), 16000)
    module.eval()
    a, _ = module(audio, lens)
    b, _ = module(audio, lens)
    assert torch.equal(a, b)
    module.train()
    module.dither = 0.0
    c, _ = module(audio, lens)
    assert (c == 0).sum() > (a == 0).sum()


def test_cutout_rectangles() -> None:
    torch.manual_seed(0)
    x = torch.ones(8, 64, 100)
    out = CutoutAugment(masks=1, min_freq=10, max_freq=10, min_time=5, max_time=5)(x)
    assert ((out == 0).sum(dim=(1, 2)) == 50).all()


def test_vtlp_warp_one_is_the_plain_filterbank() -> None:
    fb = mel_filterbank(16000, 512, 64, 0, 8000)
    assert np.array_equal(warped_filterbanks(fb, 16000, np.array([1.0]))[0], fb)


def test_vtlp_moves_filters_by_the_warp_below_the_boundary() -> None:
    fb = mel_filterbank(16000, 512, 64, 0, 8000)
    bins = np.arange(fb.shape[1])
    for warp in (0.9, 1.1):
        warped = warped_filterbanks(fb, 16000, np.array([warp]))[0]
        for m in (10, 25, 40):  # centres well under the 4.8 kHz bend
            centre = (fb[m] * bins).sum() / fb[m].sum()
            moved = (warped[m] * bins).sum() / warped[m].sum()
            assert abs(moved - centre / warp) < 0.5, (warp, m, centre, moved)
        assert np.array_equal(warped[:, -1], fb[:, -1]), "the Nyquist bin must map onto itself"
        assert np.isfinite(warped).all() and warped.min() >= 0


def test_vtlp_only_in_training_and_per_utterance() -> None:
    torch.manual_seed(0)
    audio = torch.randn(8, 16000)
    lens = torch.full((8,), 16000)
    settings = {**CANONICAL, "dither": 0.0}
    plain = FilterbankFeatures(**settings).train()
    identity = FilterbankFeatures(**settings, vtlp={"min_warp": 1, "max_warp": 1}).train()
    warped = FilterbankFeatures(**settings, vtlp={"min_warp": 0.8, "max_warp": 1.2})
    reference = plain(audio, lens)[0]
    assert torch.allclose(identity(audio, lens)[0], reference, atol=1e-5)
    assert torch.equal(warped.eval()(audio, lens)[0], plain.eval()(audio, lens)[0])
    same = torch.stack([audio[0]] * 8)
    out = warped.train()(same, lens)[0]
    assert out.shape == reference.shape
    differs = [not torch.allclose(out[0], out[i], atol=1e-4) for i in range(1, 8)]
    assert any(differs), "every utterance drew the same warp"


@given(st.floats(0.7, 1.4), st.sampled_from([8000, 16000, 22050, 48000]))
def test_vtlp_warp_is_continuous_and_maps_nyquist_to_itself(warp: float, sample_rate: int) -> None:
    nyquist = sample_rate / 2
    freqs = np.linspace(0, nyquist, 100_001)
    w = vtlp_warp(freqs, warp, nyquist)
    assert w[0] == 0 and w[-1] == pytest.approx(nyquist)
    assert (np.diff(w) > 0).all(), "the warp must be increasing"
    # piecewise linear and continuous: every slope lies between the two pieces' slopes (a jump
    # would give the segment that straddles the bend a slope outside them)
    slopes = np.diff(w) / (freqs[1] - freqs[0])
    lo, hi = sorted((slopes[0], slopes[-1]))
    assert (slopes >= lo - 1e-6).all() and (slopes <= hi + 1e-6).all(), "a jump at the bend"
    low = freqs < 0.5 * min(4800, 0.8 * nyquist)
    assert np.allclose(w[low], warp * freqs[low]), "below the bend the warp is a plain scaling"


def test_vtlp_rejects_an_empty_range_and_unknown_keys() -> None:
    with pytest.raises(ValueError, match="min_warp <= max_warp"):
        FilterbankFeatures(**CANONICAL, vtlp={"min_warp": 1.1, "max_warp": 0.9})
    with pytest.raises(ValueError, match="takes min_warp and max_warp"):
        FilterbankFeatures(**CANONICAL, vtlp={"min_warp": 0.9})
