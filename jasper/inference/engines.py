"""The acoustic model as inference runs it: eager PyTorch, PyTorch int8, or ONNX Runtime (fp32, int8).

`jasper infer`, `transcribe` and `infer-benchmark` call `prepare(model, engine, precision, ...)` once
and then call what it returns exactly as they call the eager model: `(features, lengths) ->
(log_probs, output_lengths)`, torch tensors in and out. So the loops, the WER and the timings are
the same code for every engine, and only the engine differs between two rows of a table.

ONNX Runtime runs the acoustic-model graph of `jasper export` (masks and lengths inside the graph,
dynamic batch and time axes), exported when a run first needs it and cached by content. BatchNorm
is first folded into the convolutions (`jasper.inference.quantize.fold_batchnorms`): fp32 stays within about
1e-5 of eager (ONNX Runtime would fuse the BatchNorms itself; folding matters for int8, below).
int8 is ONNX Runtime's static quantization of that graph: every Conv gets
per-channel int8 weights and uint8 activations whose ranges are calibrated on a few batches
(MinMax), in QDQ format, which ONNX Runtime fuses into int8 convolutions when it loads the graph
(unfolded, a float BatchNorm after each int8 convolution made it no faster than fp32).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from jasper import config, graphs
from jasper import model as jasper_model
from jasper.inference import export as export_module
from jasper.inference import quantize as quantize_module
from jasper.inference.export import OPSET, SIGNATURES, AcousticModel, export_onnx
from jasper.inference.pipeline import output_stride
from jasper.inference.quantize import REDUCED_RANGE, fold_batchnorms, quantize
from jasper.model import Jasper

ENGINES = ("torch", "onnxruntime")
ORT_PRECISIONS = ("fp32", "int8")
ON_CPU = "add --cpu; for jasper transcribe, --device cpu"
INSTALL_HINT = 'ONNX Runtime and the ONNX exporter are an extra: pip install -e ".[export]"'

Calibration = Iterable[tuple[torch.Tensor, torch.Tensor]]
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "jasper" / "onnxruntime"


def check(engine: str, precision: str, device: torch.device) -> None:
    """Refuse an engine/precision/device combination before any work is done, naming the option."""
    if engine not in ENGINES:
        raise config.ConfigError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if precision == "int8" and device.type != "cpu":
        raise config.ConfigError(f"--precision int8 runs on the CPU only, not {device} ({ON_CPU})")
    if engine == "onnxruntime":
        if device.type != "cpu":
            raise config.ConfigError(f"--engine onnxruntime runs on the CPU here, not {device} ({ON_CPU})")
        if precision not in ORT_PRECISIONS:
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

    ONNX Runtime gets the threads and PyTorch keeps one: PyTorch's OpenMP workers spin for a while
    after each parallel region (the features), and on 2 cores that spinning took the cores from
    ONNX Runtime: jasper10x5dr int8 1 x 2 s ran 485 ms with them spinning, 236 ms with them asleep.
    """

    def __init__(self, path: str | Path, output_stride: int, threads: int | None = None) -> None:
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3  # not the notes about CastLike nodes it cannot pre-compute
        options.intra_op_num_threads = threads or torch.get_num_threads()
        torch.set_num_threads(1)
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


# Ways to run the eager PyTorch model as a captured graph (`jasper.graphs`), each at bucketed shapes.
GRAPHS = {"compile": "torch.compile", "cuda-graphs": "CUDA graphs"}


def graphed(model: nn.Module, how: str, device: torch.device, precision: str = "fp32") -> nn.Module:
    """`model` through torch.compile (`--compile`) or replayed from CUDA graphs (`--cuda_graphs`).

    Both take the eager PyTorch model in a float dtype: int8's quantized convolutions and ONNX
    Runtime sessions are graphs of their own already.
    """
    if how not in GRAPHS:
        raise config.ConfigError(f"unknown graph mode {how!r}: one of {', '.join(GRAPHS)}")
    flag = "--compile" if how == "compile" else "--cuda_graphs"
    if precision == "int8" or isinstance(model, OrtAcousticModel):
        raise config.ConfigError(f"{flag} runs the eager PyTorch model (--engine torch), not int8 or ONNX")
    if how == "cuda-graphs":
        if device.type != "cuda":
            raise config.ConfigError(f"--cuda_graphs needs a CUDA device, not {device}")
        return graphs.CudaGraphs(model)
    problem = graphs.compiler_problem(device)
    if problem:
        raise config.ConfigError(problem)
    return graphs.Compiled(model)


def export_acoustic_model(model: Jasper, path: Path, example: tuple[torch.Tensor, torch.Tensor]) -> Path:
    """`model` as ONNX (jasper.inference.export's acoustic-model graph), traced on `example`."""
    module = AcousticModel(model)  # a float32 CPU model: fold_batchnorms makes one
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
    import onnx

    graph = onnx.load(str(source), load_external_data=False).graph
    depthwise = [
        node.name
        for node in graph.node
        if node.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in node.attribute)
    ]
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
            nodes_to_exclude=depthwise,
        )
    finally:
        root.setLevel(level)
    return target


def prepare(
    model: Jasper,
    engine: str = "torch",
    precision: str = "fp32",
    calibration: Calibration = (),
    cache_dir: str | Path | None = None,
    threads: int | None = None,
) -> nn.Module:
    """The module that runs `model` for `engine` and `precision`.

    torch fp32/bf16/fp16: `model` itself (already cast by the caller). torch int8: the int8 copy
    of `jasper.inference.quantize`. onnxruntime: `model` exported (and quantized for int8) and loaded in a
    session. int8 needs `calibration`, batches of (features, lengths) as the model receives them.

    Exporting Jasper 10x5 DR takes about a minute (two with int8), so ONNX files are kept in
    `cache_dir` (default: `$XDG_CACHE_HOME/jasper/onnxruntime`) under a key that covers everything
    they are made from; the next run with the same weights (and calibration batches) loads them.
    """
    if engine == "torch":
        return quantize(model, calibration) if precision == "int8" else model
    check(engine, precision, torch.device("cpu"))
    batches = list(calibration)
    if precision == "int8" and not batches:
        raise ValueError("int8 calibration needs at least one batch")
    directory = Path(cache_dir or CACHE) / cache_key(model, precision, batches)
    path = directory / f"acoustic-model.{precision}.onnx"
    if path.is_file():
        print(f"jasper: ONNX Runtime {precision} model from the cache: {path}", file=sys.stderr)
        return OrtAcousticModel(path, output_stride(model), threads)
    print(
        f"jasper: exporting the acoustic model for ONNX Runtime {precision} (kept in {directory})...",
        file=sys.stderr,
    )
    t0 = time.perf_counter()
    directory.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".building-", dir=directory.parent))
    try:
        example = batches[0] if batches else _example(model)
        folded = fold_batchnorms(model)
        if precision == "int8":
            unquantized = export_acoustic_model(folded, work / "acoustic-model.folded.onnx", example)
            quantize_onnx(unquantized, work / path.name, batches)
            unquantized.unlink()
        else:
            export_acoustic_model(folded, work / path.name, example)
        work.rename(directory)  # all or nothing: the cache never holds half a model
    except OSError:
        if not path.is_file():  # not "another process built the same model first"
            raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"jasper: built in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return OrtAcousticModel(path, output_stride(model), threads)


def cache_key(model: Jasper, precision: str, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> str:
    """A digest of what an ONNX Runtime model is made from: the weights, the precision, the
    calibration batches (int8), the 7-bit switch, the library versions and this code's source."""
    import onnxruntime

    digest = hashlib.sha256()
    for part in (precision, REDUCED_RANGE, torch.__version__, onnxruntime.__version__, OPSET):
        digest.update(f"{part}\n".encode())
    for module in (__file__, export_module.__file__, quantize_module.__file__, jasper_model.__file__):
        digest.update(Path(module).read_bytes())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    if precision == "int8":
        for features, lengths in batches:
            digest.update(features.detach().float().cpu().contiguous().numpy().tobytes())
            digest.update(lengths.cpu().numpy().astype(np.int64).tobytes())
    return digest.hexdigest()[:20]


def _example(model: Jasper) -> tuple[torch.Tensor, torch.Tensor]:
    """A 2-s batch of one random feature sequence: enough to trace the graph (axes are dynamic)."""
    n_feats = next(m for m in model.modules() if isinstance(m, nn.Conv1d)).in_channels
    return torch.randn(1, n_feats, 200), torch.tensor([200], dtype=torch.int32)
