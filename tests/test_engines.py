"""ONNX Runtime as an inference engine (`jasper.inference.engines`, `--engine onnxruntime`): fp32 is the eager
function, int8 stays within a stated distance of it on real speech, and `jasper infer`,
`transcribe` and `infer-benchmark` run both."""

from __future__ import annotations

import json
from pathlib import Path

import jiwer
import pytest
import torch
from test_inference import mini, one_process, read_predictions, run_script, script_env  # noqa: F401
from test_quantize import tiny_model_on_real_speech
from test_transcribe import TINY

from jasper import device
from jasper.cli import main
from jasper.inference import engines, quantize
from jasper.inference.engines import OrtAcousticModel, cache_key, prepare
from jasper.inference.pipeline import output_stride

pytest.importorskip("onnxruntime", reason="ONNX Runtime is an extra: pip install -e '.[export]'")
pytest.importorskip("onnxscript", reason="the ONNX exporter is an extra: pip install -e '.[export]'")

# Largest |int8 - fp32| log-prob accepted on held-out real speech with tiny random weights, for
# either int8 engine (measured on an AVX2 CPU: PyTorch 0.09, ONNX Runtime 0.15; both 0.43 before
# activations, resp. weights, got 7 bits there: jasper.inference.quantize.has_vnni).
INT8_TOLERANCE = 0.25


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test builds its ONNX files in its own cache, not in the user's."""
    monkeypatch.setattr(engines, "CACHE", tmp_path / "cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # for the subprocesses
    return tmp_path / "cache"


def test_onnxruntime_fp32_is_the_eager_model_and_int8_stays_close_on_real_speech(
    cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, inputs = tiny_model_on_real_speech()
    calibration = inputs[:3]
    fp32 = prepare(model, "onnxruntime", "fp32")
    assert isinstance(fp32, OrtAcousticModel)
    assert output_stride(fp32) == output_stride(model) == 2
    int8 = {name: prepare(model, name, "int8", calibration) for name in ("torch", "onnxruntime")}
    assert sorted(p.name for p in cache.rglob("*")) == sorted(
        [
            fp32.path.parent.name,
            int8["onnxruntime"].path.parent.name,
            "acoustic-model.fp32.onnx",
            "acoustic-model.int8.onnx",
        ]
    )  # nothing half-built is left behind
    assert "from the cache" not in capsys.readouterr().err
    again = prepare(model, "onnxruntime", "int8", calibration)
    assert again.path == int8["onnxruntime"].path and "from the cache" in capsys.readouterr().err
    other = [(x * 1.01, n) for x, n in calibration]  # other calibration data: another model
    assert cache_key(model, "int8", other) != cache_key(model, "int8", calibration)
    with torch.inference_mode():
        for x, lens in inputs[5:8]:  # not the calibration clips
            ref, ref_lens = model(x, lens)
            got, got_lens = fp32(x, lens)
            assert torch.equal(ref_lens, got_lens)
            torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
            for name, q in int8.items():
                got, got_lens = q(x, lens)
                assert torch.equal(ref_lens, got_lens)
                valid = slice(0, int(ref_lens[0]))  # PyTorch int8 leaves frames past the length unmasked
                diff = float((got - ref)[:, valid].abs().max())
                print(f"{name} int8 vs fp32: max |log-prob difference| {diff:.3f}")
                assert diff < INT8_TOLERANCE, name
                assert (got.argmax(-1) == ref.argmax(-1))[:, valid].float().mean() > 0.9, name
        batch = torch.randn(2, x.shape[1], 333), torch.tensor([333, 120])  # dynamic axes, masks
        torch.testing.assert_close(fp32(*batch)[0], model(*batch)[0], atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="at least one batch"):
        prepare(model, "onnxruntime", "int8", [])


def test_infer_onnxruntime_int8_transcribes_as_fp32_does(
    mini: dict,  # noqa: F811
    one_process: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    env = script_env(mini, tmp_path, ENGINE="onnxruntime", PRECISION="int8", CPU="true")
    env["XDG_CACHE_HOME"] = str(tmp_path)
    first = run_script("inference.sh", env | {"PREDICTION_FILE": str(tmp_path / "1.txt")}, "--workers", "0")
    again = run_script("inference.sh", env | {"PREDICTION_FILE": str(tmp_path / "2.txt")}, "--workers", "0")
    assert "exporting the acoustic model for ONNX Runtime int8" in first.stderr
    assert "from the cache" in again.stderr and "exporting" not in again.stderr
    assert len(list((tmp_path / "jasper" / "onnxruntime").glob("*/acoustic-model.int8.onnx"))) == 1
    fp32 = [h for _, h in read_predictions(one_process / "pred.txt")]
    int8 = [h for _, h in read_predictions(tmp_path / "1.txt")]
    assert read_predictions(tmp_path / "2.txt") == read_predictions(tmp_path / "1.txt")
    assert len(int8) == len(fp32) == 36
    assert jiwer.cer(fp32, int8) < 0.2  # random weights: near-tied argmaxes flip


def test_transcribe_engines_and_their_errors(
    mini: dict,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    clips = [str(p) for p in sorted(mini["root"].rglob("*.flac"))[:3]]
    base = ["transcribe", "--ckpt", str(mini["ckpt"]), "--device", "cpu"]

    def transcribe(*extra: str) -> tuple[int, str, str]:
        code = main([*base, *extra])
        out = capsys.readouterr()
        return code, out.out, out.err

    code, torch_fp32, _ = transcribe(*clips)
    assert code == 0
    texts = [line.split("\t")[1] for line in torch_fp32.splitlines()]
    assert len(texts) == 3 and any(t.strip() for t in texts)
    assert transcribe("--engine", "onnxruntime", *clips)[:2] == (0, torch_fp32)
    code, torch_int8, _ = transcribe("--precision", "int8", "--calibration_files", "2", *clips)
    assert code == 0
    assert jiwer.cer(texts, [line.split("\t")[1] for line in torch_int8.splitlines()]) < 0.2
    refused = {
        ("--engine", "onnxruntime", "--precision", "bf16"): "runs fp32 or int8",
        ("--precision", "int8", "--stream"): "not with --stream",
    }
    for extra, message in refused.items():
        code, _, err = transcribe(*extra, clips[0])
        assert code == 2 and message in err, err


def test_benchmark_sweeps_engines_and_precisions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bench = ["infer-benchmark", "--model_config", str(TINY), "--device", "cpu", "--batch_sizes", "1", "2"]
    bench += ["--durations", "1", "--precisions", "fp32", "int8", "bf16", "--engines", "torch", "onnxruntime"]
    assert main([*bench, "--steps", "2", "--warmup_steps", "1", "--threads", "1", "-o", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "infer_benchmark.json").read_text())
    paths = [(r["engine"], r["precision"]) for r in record["results"] if r["batch_size"] == 1]
    assert paths == [
        ("torch", "fp32"),
        ("torch", "int8"),
        ("torch", "bf16"),
        ("onnxruntime", "fp32"),
        ("onnxruntime", "int8"),
    ]  # onnxruntime has no bf16: skipped, with a warning
    out = capsys.readouterr().out
    assert "ONNX Runtime INT8 latency, model only" in out and "Speed-up vs FP32" in out
    assert (tmp_path / "infer_benchmark.png").stat().st_size > 10_000


def test_cpu_flags_decide_bf16_warning_and_int8_range(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cpu = torch.device("cpu")
    for flags, warned, vnni in (
        ({"avx2"}, True, False),  # an AVX2-only EPYC: bf16 emulated, int8 sums in int16
        ({"avx512f", "avx512_vnni", "avx512_bf16"}, False, True),
        ({"avx2", "avx_vnni", "amx_bf16"}, False, True),
        (set(), False, False),  # unknown (no /proc/cpuinfo): no warning, 7-bit int8 to be safe
    ):
        monkeypatch.setattr(device, "cpu_flags", lambda f=frozenset(flags): f)
        caplog.clear()
        assert device.inference_dtype("bf16", cpu) == torch.bfloat16
        assert (device.BF16_EMULATED in caplog.text) == warned, flags
        assert quantize.has_vnni() == vnni, flags
    # An instruction-set cap below VNNI (as `benchmarks/nemo_side_by_side.py --avx2` sets) counts as none.
    monkeypatch.setattr(device, "cpu_flags", lambda: frozenset({"avx512f", "avx512_vnni"}))
    for name, value, vnni in (
        ("ONEDNN_MAX_CPU_ISA", "AVX2", False),
        ("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_VNNI", True),
        ("FBGEMM_ENABLE_INSTRUCTIONS", "AVX2", False),
        ("FBGEMM_ENABLE_INSTRUCTIONS", "ALL", True),
    ):
        with monkeypatch.context() as env:
            env.setenv(name, value)
            assert quantize.has_vnni() == vnni, (name, value)
