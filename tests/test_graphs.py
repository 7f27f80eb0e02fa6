"""Captured graphs (`jasper.graphs`): the length buckets, and torch.compile's outputs against eager.

Compiled and eager runs differ only by floating-point reassociation (inductor fuses and reorders
reductions), so log-probs are compared within 1e-4 and gradients within 1e-4 + 1e-3 relative. In
training, BatchNorm's batch statistics see a bucket's extra zero frames as they see any padding, so
the training step is compared with eager at the bucket's length. The compile
tests skip where inductor cannot build CPU code (no C++ compiler or Python headers).
"""

from __future__ import annotations

import pytest
import torch
from conftest import REPO
from hypothesis import given
from hypothesis import strategies as st

from jasper import config, graphs
from jasper.model import Jasper, output_stride
from jasper.training.loss import ctc_loss

TINY = REPO / "configs" / "tiny.yaml"
needs_compiler = pytest.mark.skipif(
    graphs.compiler_problem(torch.device("cpu")) is not None,
    reason=f"inductor cannot build CPU code here: {graphs.compiler_problem(torch.device('cpu'))}",
)


@given(st.integers(1, 20000))
def test_bucket_holds_the_length_within_an_eighth(frames: int) -> None:
    b = graphs.bucket(frames)
    assert b >= frames and b % graphs.ALIGN == 0
    if frames > 128:
        assert b <= frames * 1.125
    assert graphs.bucket(b) == b  # a bucket is its own bucket: padded inputs never move up again


def test_training_lengths_fall_in_few_buckets() -> None:
    # 2 to 16.7 s of audio at 100 frames a second: one compile per bucket, not per batch length
    assert len({graphs.bucket(n) for n in range(200, 1672)}) <= 26
    assert graphs.batch_bucket(1) == 1 and graphs.batch_bucket(3) == 4 and graphs.batch_bucket(8) == 8


def _model(seed: int = 0) -> Jasper:
    torch.manual_seed(seed)
    return Jasper.from_config(config.load(TINY))


@needs_compiler
def test_compiled_inference_equals_eager_and_compiles_once_per_bucket() -> None:
    from torch._dynamo.utils import counters

    model = _model().eval()
    compiled = graphs.Compiled(model)
    assert output_stride(compiled) == output_stride(model)  # the wrapper counts each stride once
    graphs_before = counters["stats"]["unique_graphs"]
    for frames in (145, 150, 160):  # one bucket (160)
        with torch.inference_mode():  # as inference makes its features (a guard of dynamo's)
            x = torch.randn(2, 64, frames)
            lens = torch.tensor([frames, frames - 37])
            want, want_lens = model(x, lens)
            got, got_lens = compiled(x, lens)
        assert got.shape == want.shape
        assert torch.equal(got_lens, want_lens)
        for i, n in enumerate(want_lens.tolist()):
            torch.testing.assert_close(got[i, :n], want[i, :n], atol=1e-4, rtol=1e-4)
    assert compiled.compiles == 1
    assert counters["stats"]["unique_graphs"] - graphs_before == 1  # dynamo's own count agrees


@needs_compiler
def test_compiled_training_step_equals_eager_at_the_bucket_length() -> None:
    x = torch.randn(3, 64, 123)
    lens = torch.tensor([123, 100, 77])
    targets = torch.randint(0, 28, (3, 9))
    target_lens = torch.tensor([9, 7, 5])

    def eager_at_bucket(model: Jasper):  # training BatchNorm sees the bucket's zero frames too
        return lambda x, lens: model(graphs.pad_time(x, graphs.bucket(x.shape[-1])), lens)

    results = []
    for wrap in (eager_at_bucket, graphs.Compiled):
        model = _model(seed=1).train()
        log_probs, out_lens = wrap(model)(x, lens)
        loss = ctc_loss(log_probs, out_lens, targets, target_lens, 28).mean()
        loss.backward()
        results.append((loss.item(), {k: p.grad.clone() for k, p in model.named_parameters()}))
    (eager_loss, eager), (compiled_loss, compiled) = results
    assert compiled_loss == pytest.approx(eager_loss, rel=1e-5)
    for name, g in eager.items():
        torch.testing.assert_close(compiled[name], g, atol=1e-4, rtol=1e-3, msg=name)
