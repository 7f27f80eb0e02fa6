"""int8 inference (`jasper.inference.quantize`, `--precision int8`): BatchNorm folding is exact, the int8
model stays close to the float one, and `jasper infer` / `infer-benchmark` run it."""

from __future__ import annotations

import json
from pathlib import Path

import jiwer
import pytest
import torch
import torch.ao.nn.quantized as nnq
from conftest import require_shared
from test_inference import mini, one_process, read_predictions, run_script, script_env  # noqa: F401
from test_transcribe import TINY

from jasper import audio, config
from jasper.cli import main
from jasper.features import FilterbankFeatures
from jasper.inference.pipeline import load
from jasper.inference.quantize import Int8MaskedConv1d, fold_batchnorm, quantize
from jasper.model import Jasper, MaskedConv1d


def test_folding_batchnorm_into_the_convolution_is_exact() -> None:
    torch.manual_seed(0)
    conv, bn = torch.nn.Conv1d(8, 16, 5, padding=2, bias=False), torch.nn.BatchNorm1d(16).eval()
    bn.running_mean.normal_(0, 0.5)
    bn.running_var.uniform_(0.5, 2.0)
    bn.weight.data.uniform_(0.5, 1.5)
    bn.bias.data.normal_(0, 0.1)
    x = torch.randn(2, 8, 50)
    with torch.no_grad():
        expected = bn(conv(x))
        fold_batchnorm(conv, bn)
        torch.testing.assert_close(conv(x), expected, atol=1e-5, rtol=1e-5)


def tiny_model_on_real_speech(path: Path = TINY) -> tuple[Jasper, list[tuple[torch.Tensor, torch.Tensor]]]:
    """Random weights (seed 0) of the config at `path` and the model inputs of the first 8 real clips:
    int8 calibrates on the first 3 and is compared with fp32 on 5-7."""
    clips = sorted(require_shared("data", "librispeech-real-mini").rglob("*.flac"))[:8]
    cfg = config.load(path)
    torch.manual_seed(0)
    model = Jasper.from_config(cfg).eval()
    features = FilterbankFeatures(**config.section(cfg, "input_val", "filterbank_features")).eval()
    inputs = []
    for path in clips:
        x = torch.from_numpy(audio.load(path))
        inputs.append(features(x[None], torch.tensor([x.numel()])))
    return model, inputs


def test_int8_model_stays_close_to_float_on_real_speech() -> None:
    model, inputs = tiny_model_on_real_speech()
    q = quantize(model, inputs[:3])
    assert sum(isinstance(m, Int8MaskedConv1d) for m in q.modules()) == sum(
        isinstance(m, MaskedConv1d) for m in model.encoder.modules()
    )
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in q.encoder.modules())
    with torch.inference_mode():
        for x, lens in inputs[5:8]:  # not the calibration clips
            ref, ref_lens = model(x, lens)
            got, got_lens = q(x, lens)
            assert torch.equal(ref_lens, got_lens)
            got, ref = got[:, : int(got_lens[0])], ref[:, : int(ref_lens[0])]  # the valid frames
            print(f"int8 vs fp32: max |log-prob difference| {(got - ref).abs().max():.3f}")
            assert (got - ref).abs().max() < 0.25
            assert (got.argmax(-1) == ref.argmax(-1)).float().mean() > 0.9
    assert isinstance(model.encoder.layers[0].conv[0], MaskedConv1d)  # the float model is untouched
    with pytest.raises(ValueError, match="at least one batch"):
        quantize(model, [])


def test_int8_quartznet_multiplies_channels_last_frames_and_padding_stays_irrelevant() -> None:
    """QuartzNet's 1x1 convolutions become int8 matrix products over channels-last frames and skip the
    masking that would change only frames past the lengths: a clip padded in a batch keeps the
    log-probs it has alone, and int8 stays close to fp32."""
    model, inputs = tiny_model_on_real_speech(TINY.parent / "quartznet5x3_cpu.yaml")
    q = quantize(model, inputs[:3])
    int8 = [m for m in q.modules() if isinstance(m, Int8MaskedConv1d)]
    dense = [m for m in model.modules() if isinstance(m, MaskedConv1d) and m.groups == 1]
    assert len(int8) == len(dense) > 10  # every one of them 1x1 and fed by a depthwise or a block
    assert all(isinstance(m.int8_conv, nnq.Linear) and not m.masked for m in int8)
    with torch.inference_mode():
        for x, lens in inputs[5:8]:
            ref, _ = model(x, lens)
            got, got_lens = q(x, lens)
            n = int(got_lens[0])
            assert (got - ref)[:, :n].abs().max() < 0.25
            assert (got.argmax(-1) == ref.argmax(-1))[:, :n].float().mean() > 0.9
            padded, padded_lens = q(torch.cat([x, 5 * torch.randn(1, x.shape[1], 48)], dim=2), lens)
            assert torch.equal(padded_lens, got_lens) and padded.shape[1] > n
            torch.testing.assert_close(padded[0, :n], got[0, :n], atol=1e-5, rtol=0)


def test_infer_int8_transcribes_as_fp32_does(mini: dict, one_process: Path, tmp_path: Path) -> None:  # noqa: F811
    env = script_env(mini, tmp_path, PREDICTION_FILE=str(tmp_path / "int8.txt"), PRECISION="int8", CPU="true")
    run_script("inference.sh", env, "--workers", "0")
    fp32 = [h for _, h in read_predictions(one_process / "pred.txt")]
    int8 = [h for _, h in read_predictions(tmp_path / "int8.txt")]
    assert len(int8) == len(fp32) == 36
    assert jiwer.cer(fp32, int8) < 0.2  # random weights: near-tied argmaxes flip (0.10 measured)


def test_int8_file_mode_and_benchmark(
    mini: dict,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    wav = next(mini["root"].rglob("*.flac"))
    args = ["infer", "--model_config", str(TINY), "--ckpt", str(mini["ckpt"]), "--cpu", "-o", str(tmp_path)]
    assert main([*args, "--transcribe_wav", str(wav), "--precision", "int8"]) == 0  # calibrated on the file
    assert "Prediction   1:" in capsys.readouterr().out
    assert main([*args, "--transcribe_wav", str(wav), "--precision", "int8", "--torchscript"]) == 2
    assert "leave out --precision int8" in capsys.readouterr().err
    with pytest.raises(config.ConfigError, match="calibration"):  # never a silent fp32 model
        load(mini["ckpt"], device="cpu", precision="int8")
    bench = ["infer-benchmark", "--model_config", str(TINY), "--device", "cpu", "--batch_sizes", "1"]
    bench += ["--durations", "1", "--precisions", "fp32", "int8", "--steps", "3", "--warmup_steps", "1"]
    assert main([*bench, "--threads", "1", "--output_dir", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "infer_benchmark.json").read_text())
    assert [r["precision"] for r in record["results"]] == ["fp32", "int8"]
    assert "INT8 latency" in capsys.readouterr().out
