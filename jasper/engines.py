"""The acoustic model as inference runs it: eager PyTorch, PyTorch int8, or ONNX Runtime (fp32, int8).

`jasper infer`, `transcribe` and `infer-benchmark` call `prepare(model, engine, precision, ...)` once
and then call what it returns exactly as they call the eager model: `(features, lengths) ->
(log_probs, output_lengths)`, torch tensors in and out. So the loops, the WER and the timings are
the same code for every engine, and only the engine differs between two rows of a table.

ONNX Runtime runs the acoustic-model graph of `jasper export` (masks and lengths inside the
graph, dynamic batch and time axes), exported when the run starts. fp32 is the same function as
eager (about 3e-6 apart). int8 is ONNX Runtime's static quantization: BatchNorm is first folded
into the convolutions (`jasper.quantize.fold_batchnorms`, so no float op sits between a
convolution and its normalisation), then every Conv gets per-channel int8 weights and uint8
activations whose ranges are calibrated on a few batches (MinMax), in QDQ format, which ONNX
Runtime fuses into int8 convolutions when it loads the graph.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from jasper import config
from jasper.export import SIGNATURES, AcousticModel, export_onnx
from jasper.model import Jasper
from jasper.quantize import REDUCED_RANGE, fold_batchnorms, quantize

log = logging.getLogger(__name__)

ENGINES = ("torch", "onnxruntime")
INSTALL_HINT = 'ONNX Runtime and the ONNX exporter are an extra: pip install -e ".[export]"'

Calibration = Iterable[tuple[torch.Tensor, torch.Tensor]]


def check(engine: str, precision: str, device: torch.device) -> None:
    """Refuse an engine/precision/device combination before any work is done, naming the option."""
    if engine not in ENGINES:
        raise config.ConfigError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if precision == "int8" and device.type != "cpu":
        raise config.ConfigError(f"--precision int8 runs on the CPU only, not {device} (add --cpu)")
    if engine == "onnxruntime":
        if device.type != "cpu":
            raise config.ConfigError(f"--engine onnxruntime runs on the CPU here, not {device} (add --cpu)")
        if precision not in ("fp32", "int8"):
            raise config.ConfigError(f"--engine onnxruntime runs fp32 or int8, not --precision {precision}")
        try:
            import onnxruntime  # noqa: F401
            import onnxscript  # noqa: F401
        except ImportError as e:
            raise config.ConfigError(f"--engine onnxruntime: {e}. {INSTALL_HINT}") from None


class OrtAcousticModel(nn.Module):
    """An ONNX acoustic model in an ONNX Runtime CPU session, called like the eager model.

    It owns no weights; `anchor`, an empty float32 parameter, tells callers that look at
    `next(model.parameters())` where inputs go (the CPU) and in which dtype (float32).
    `output_stride` stands in for the strides of the convolutions it hides.
    """

    def __init__(self, path: str | Path, output_stride: int, threads: int | None = None) -> None:
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3  # not the notes about CastLike nodes it cannot pre-compute
        options.intra_op_num_threads = threads or torch.get_num_threads()
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.path, self.output_stride = Path(path), output_stride
        self.anchor = nn.Parameter(torch.zeros(0), requires_grad=False)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_probs, out_lens = self.session.run(
            None,
            {
                "features": features.detach().float().cpu().numpy(),
                "feature_lengths": lengths.detach().cpu().numpy().astype(np.int32),
            },
        )
        return torch.from_numpy(log_probs), torch.from_numpy(out_lens).long()


def _strides(model: nn.Module) -> int:
    return int(np.prod([m.stride[0] for m in model.modules() if isinstance(m, nn.Conv1d)]))


def export_acoustic_model(model: Jasper, path: Path, example: tuple[torch.Tensor, torch.Tensor]) -> Path:
    """`model` as ONNX (jasper.export's acoustic-model graph), traced on `example`."""
    module = AcousticModel(model.float().cpu().eval())
    features, lengths = example
    export_onnx(
        module, (features.float().cpu(), lengths.cpu().to(torch.int32)), SIGNATURES["acoustic-model"], path
    )
    return path


def quantize_onnx(source: Path, target: Path, calibration: list[tuple[torch.Tensor, torch.Tensor]]) -> Path:
    """ONNX Runtime static int8 quantization of every Conv in `source`, calibrated on `calibration`."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(
                {"features": f.float().cpu().numpy(), "feature_lengths": n.cpu().numpy().astype(np.int32)}
                for f, n in calibration
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    # It logs "please run pre-processing" on the root logger: BatchNorm is folded already, and
    # ONNX Runtime optimises the rest of the graph when it loads it.
    root, level = logging.getLogger(), logging.getLogger().level
    root.setLevel(logging.ERROR)
    try:
        quantize_static(
            str(source),
            str(target),
            Reader(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            reduce_range=REDUCED_RANGE,  # 7-bit weights where int8 products add up in int16
            op_types_to_quantize=["Conv"],
        )
    finally:
        root.setLevel(level)
    return target


def prepare(
    model: Jasper,
    engine: str = "torch",
    precision: str = "fp32",
    calibration: Calibration = (),
    workdir: str | Path | None = None,
    threads: int | None = None,
) -> nn.Module:
    """The module that runs `model` for `engine` and `precision`.

    torch fp32/bf16/fp16: `model` itself (already cast by the caller). torch int8: the int8 copy
    of `jasper.quantize`. onnxruntime: `model` exported (and quantized for int8) into `workdir`
    (a temporary directory by default) and loaded in a session. int8 needs `calibration`, batches
    of (features, lengths) as the model receives them; the first one is also the export's example.
    """
    if engine == "torch":
        return quantize(model, calibration) if precision == "int8" else model
    check(engine, precision, torch.device("cpu"))
    batches = list(calibration)
    if precision == "int8" and not batches:
        raise ValueError("int8 calibration needs at least one batch")
    directory = Path(workdir or tempfile.mkdtemp(prefix="jasper-ort-"))
    directory.mkdir(parents=True, exist_ok=True)
    example = batches[0] if batches else _example(model)
    t0 = time.perf_counter()
    if precision == "int8":
        fp32 = export_acoustic_model(
            fold_batchnorms(model), directory / "acoustic-model.folded.onnx", example
        )
        path = quantize_onnx(fp32, directory / "acoustic-model.int8.onnx", batches)
    else:
        path = export_acoustic_model(model, directory / "acoustic-model.fp32.onnx", example)
    log.info("ONNX Runtime %s model: %s (%.1f s to build)", precision, path, time.perf_counter() - t0)
    return OrtAcousticModel(path, _strides(model), threads)


def _example(model: Jasper) -> tuple[torch.Tensor, torch.Tensor]:
    """A 2-s batch of one random feature sequence: enough to trace the graph (axes are dynamic)."""
    n_feats = next(m for m in model.modules() if isinstance(m, nn.Conv1d)).in_channels
    return torch.randn(1, n_feats, 200), torch.tensor([200], dtype=torch.int32)
