"""Export the inference pipeline (feature extractor, acoustic model, greedy decoder) to ONNX and TorchScript.

The three parts are exported separately, as NVIDIA's Triton deployment chains them, and each one
takes the true lengths next to the padded batch: the feature extractor masks and normalises over
each utterance's own frames, the acoustic model zeroes padding before every convolution, and the
decoder forces frames past each output length to blank. So a short utterance decodes to the same
text in a padded batch as alone, which the reference's unmasked exports did not do (spec 12.3-12.4).

ONNX files use dynamic batch and time axes (torch's `torch.export`-based exporter) and keep their
weights inside the file; TorchScript files are traces that are checked on a second shape. In fp16
only the acoustic model changes: it computes in half precision but keeps fp32 inputs and outputs,
so the same feature extractor and decoder serve both precisions. Every export is verified against
eager PyTorch on a variable-length batch before the command succeeds.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from jasper import config
from jasper.decoding import greedy_ids
from jasper.features import FilterbankFeatures, zero_past
from jasper.hub.models import add_model_arguments, config_of, model_spec, read_checkpoint
from jasper.inference.pipeline import model_from_checkpoint
from jasper.model import Jasper

log = logging.getLogger(__name__)

COMPONENTS = ("feature-extractor", "acoustic-model", "decoder")
FORMATS = {"onnx": "onnx", "torchscript": "pt"}
PRECISIONS = ("fp32", "fp16")
OPSET = 18
# Largest |exported - eager| accepted on the verification batch. Log-mel features get 1e-3: ONNX
# Runtime's DFT and torch's FFT round differently, and on real speech the float32 eager features
# themselves differ from a float64 computation by about 2e-4 in the quietest mel bins.
TOLERANCE = {"feature-extractor": 1e-3, "acoustic-model": 1e-4, "acoustic-model-fp16": 5e-2, "decoder": 0.0}


def reflect_tails(x: torch.Tensor, lengths: torch.Tensor, width: int) -> torch.Tensor:
    """Append `width` samples to every row and fill each row's `[len, len + width)` with its reflection.

    A centred STFT reflect-pads the end of the whole batch, so a shorter row sees its zero padding
    in its last frames instead of its own reflection, and its features depend on the batch (by up
    to 2.9 on one normalised feature measured on LibriSpeech). Filled like this, every row's STFT
    frames are exactly those it gets alone. Rows need at least `width + 1` samples.
    """
    x = F.pad(x, (0, width))
    pos = torch.arange(x.shape[1], device=x.device)[None, :]
    ends = lengths.to(torch.int64)[:, None]
    beyond = pos - ends
    tail = (beyond >= 0) & (beyond < width)
    source = torch.where(tail, (ends - 2 - beyond).clamp(min=0), pos)
    return torch.gather(x, 1, source)


class FeatureExtractor(nn.Module):
    """audio `[B, L]` float32 + num_samples `[B]` int32 -> features `[B, n_filt, T]`, lengths `[B]` int32.

    The eval-mode `FilterbankFeatures` math, with three differences that make it exportable and
    batch-independent: no CPU row-chunking loop (a Python loop over the batch cannot become a
    graph), branch-free padding to `pad_align` (so the batch and time axes stay symbolic), and each
    row reflect-padded at its own end (`reflect_tails`), so an utterance gets the same features in
    any batch as alone. Audio must hold at least `min_samples` samples.
    """

    def __init__(self, features_config: dict[str, Any]) -> None:
        super().__init__()
        self.preemph = features_config["preemph"]
        self.features = FilterbankFeatures(**{**features_config, "preemph": None}).eval()
        self.hop_length = self.features.hop_length
        self.pad_align = max(self.features.pad_align, 1)
        self.max_len = self.features.max_len
        self.half_window = self.features.n_fft // 2
        self.min_samples = self.half_window + 1

    def forward(self, audio: torch.Tensor, num_samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = self.features.valid_frames(num_samples)
        x = audio.float()
        if self.preemph is not None:
            x = torch.cat([x[:, :1], x[:, 1:] - self.preemph * x[:, :-1]], dim=1)
        frames = 1 + x.shape[1] // self.hop_length
        if self.features.frontend == "nemo-2.5":  # zero padding: each row's own tail is zeros already
            if self.preemph is not None:
                x = zero_past(x, num_samples)
        else:
            x = reflect_tails(x, num_samples, self.half_window)
        x = self.features._log_mel(x, lengths)[..., :frames]
        size = frames
        if self.max_len:
            size = torch.sym_max(size, self.max_len)
        pad = size - frames + (-size) % self.pad_align
        return F.pad(x, (0, pad)), lengths


class AcousticModel(nn.Module):
    """features `[B, n_feats, T]` + lengths `[B]` -> log-probs `[B, T', C]` float32, lengths `[B]` int32.

    With `half=True` a half-precision copy of the network runs between an input and an output cast.
    """

    def __init__(self, model: Jasper, half: bool = False) -> None:
        super().__init__()
        self.model = copy.deepcopy(model).half().eval() if half else model.eval()
        self.half = half

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = features.half() if self.half else features
        log_probs, out_lens = self.model(x, lengths)
        return log_probs.float(), out_lens.to(torch.int32)


class GreedyDecoder(nn.Module):
    """log-probs `[B, T, C]` + lengths `[B]` -> argmax ids `[B, T]` int32, blank beyond each length."""

    def forward(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return greedy_ids(log_probs, lengths)


@dataclass(frozen=True)
class Signature:
    """Names and dynamic axes of one component's inputs and outputs."""

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    dynamic: tuple[dict[int, str], ...]  # per input: axis -> name


SIGNATURES = {
    "feature-extractor": Signature(
        ("audio", "num_samples"), ("features", "feature_lengths"), ({0: "batch", 1: "samples"}, {0: "batch"})
    ),
    "acoustic-model": Signature(
        ("features", "feature_lengths"),
        ("log_probs", "output_lengths"),
        ({0: "batch", 2: "frames"}, {0: "batch"}),
    ),
    "decoder": Signature(
        ("log_probs", "output_lengths"), ("ids",), ({0: "batch", 1: "frames"}, {0: "batch"})
    ),
}


def build_components(cfg: dict[str, Any], model: Jasper, precision: str = "fp32") -> dict[str, nn.Module]:
    """The three exportable modules for a config and a loaded model (eval mode)."""
    return {
        "feature-extractor": FeatureExtractor(config.section(cfg, "input_val", "filterbank_features")),
        "acoustic-model": AcousticModel(model, half=precision == "fp16"),
        "decoder": GreedyDecoder().eval(),
    }


def checkpoint_model(
    spec: str | Path, model_config: str | Path | None = None, ema: bool = False, overrides: Sequence[str] = ()
) -> tuple[dict[str, Any], Jasper]:
    """The config and the eval-mode model of a published name, a `.pt`/`.nemo` file or a URL (`--model`,
    `--ckpt`); `model_config` overrides the checkpoint's own config, `ema` picks the EMA weights."""
    state = read_checkpoint(spec)
    cfg = config_of(state, model_config, overrides, source=str(spec))
    return cfg, model_from_checkpoint(cfg, state, ema, source=str(spec)).eval()


def example_inputs(
    name: str, components: dict[str, nn.Module], num_samples: Sequence[int], seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs for `name` computed from a random padded audio batch with the given true lengths."""
    gen = torch.Generator().manual_seed(seed)
    lens = torch.tensor(num_samples, dtype=torch.int32)
    audio = 0.1 * torch.randn(len(num_samples), max(num_samples), generator=gen)
    audio = zero_past(audio, lens)
    inputs: tuple[torch.Tensor, torch.Tensor] = (audio, lens)
    with torch.no_grad():
        for step in COMPONENTS:
            if step == name:
                return inputs
            inputs = components[step](*inputs)
    raise ValueError(f"unknown component {name!r}; choose from {COMPONENTS}")


def export_onnx(module: nn.Module, inputs: tuple[torch.Tensor, ...], sig: Signature, path: Path) -> None:
    """ONNX (opset 18) with symbolic batch/time axes and the weights inside the file."""
    dims: dict[str, torch.export.Dim] = {}
    shapes = tuple(
        {axis: dims.setdefault(name, torch.export.Dim(name, min=1)) for axis, name in per_input.items()}
        for per_input in sig.dynamic
    )
    # The exporter's FutureWarnings and "torchvision is not installed" notes concern torch itself.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module,
            inputs,
            input_names=list(sig.inputs),
            output_names=list(sig.outputs),
            dynamic_shapes=shapes,
            opset_version=OPSET,
            dynamo=True,
            external_data=False,
            verbose=False,
            # onnxscript's graph optimizer drops the `+ 1e-20` log guard (silence then becomes -inf
            # and the normalisation NaN); ONNX Runtime optimises the graph itself when it loads it.
            optimize=False,
        )
    program.save(str(path), external_data=False)


def export_torchscript(module: nn.Module, inputs: tuple[torch.Tensor, ...], path: Path) -> None:
    """A TorchScript trace. Shapes are recorded symbolically; `verify` checks another shape."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings about Python ints taken from shapes
        traced = torch.jit.trace(module, inputs, check_trace=False)
    traced.save(str(path))


def runner(path: Path) -> Callable[..., list[np.ndarray]]:
    """Call an exported file (ONNX Runtime or TorchScript) on numpy inputs; returns numpy outputs."""
    if path.suffix == ".onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3  # not the warnings about CastLike nodes it cannot pre-compute
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        return lambda *xs: session.run(None, dict(zip(names, xs, strict=True)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 deprecates TorchScript
        module = torch.jit.load(str(path), map_location="cpu")

    def call(*xs: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():
            out = module(*(torch.from_numpy(np.asarray(x)) for x in xs))
        return [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]

    return call


def max_difference(
    name: str, module: nn.Module, components: dict[str, nn.Module], path: Path, num_samples: Sequence[int]
) -> float:
    """Largest absolute difference between the exported file and eager on one input batch.

    Integer outputs (lengths, ids) must match exactly, and NaN must not appear: either counts as
    infinity.
    """
    inputs = example_inputs(name, components, num_samples, seed=1)
    with torch.no_grad():
        expected = module(*inputs)
    expected = expected if isinstance(expected, tuple) else (expected,)
    got = runner(path)(*(x.numpy() for x in inputs))
    worst = 0.0
    for want, have in zip(expected, got, strict=True):
        want = want.numpy()
        if want.shape != have.shape or (want.dtype.kind == "i" and not np.array_equal(want, have)):
            return float("inf")
        diff = float(np.abs(want.astype(np.float64) - have).max(initial=0.0))
        worst = max(worst, diff if diff == diff else float("inf"))
    return worst


def export_path(output_dir: Path, name: str, fmt: str, precision: str) -> Path:
    """`<dir>/<component>.<ext>`; the acoustic model gets its precision: `acoustic-model.fp16.onnx`."""
    suffix = f".{precision}" if name == "acoustic-model" else ""
    return output_dir / f"{name}{suffix}.{FORMATS[fmt]}"


def export(
    cfg: dict[str, Any],
    model: Jasper,
    output_dir: str | Path,
    formats: Sequence[str] = ("onnx",),
    precisions: Sequence[str] = ("fp32",),
    components: Sequence[str] = COMPONENTS,
    verify: bool = True,
) -> dict[str, Any]:
    """Export and verify the chosen components; returns what `export.json` records.

    The example batch is 2 s and 1.3 s of audio; verification runs on 3 utterances of other
    lengths, so a graph that baked in a shape fails here rather than in a server.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    sample_rate = config.section(cfg, "input_val", "filterbank_features")["sample_rate"]
    trace_lens = [2 * sample_rate, int(1.3 * sample_rate)]
    check_lens = [int(2.7 * sample_rate), int(0.4 * sample_rate), int(1.61 * sample_rate)]
    files: dict[str, dict[str, Any]] = {}
    for k, precision in enumerate(precisions):
        parts = build_components(cfg, model, precision)
        # Only the acoustic model has a precision; the other parts are written once.
        names = [n for n in components if k == 0 or n == "acoustic-model"]
        for name in names:
            module = parts[name]
            inputs = example_inputs(name, parts, trace_lens)
            for fmt in formats:
                path = export_path(output_dir, name, fmt, precision)
                if fmt == "onnx":
                    export_onnx(module, inputs, SIGNATURES[name], path)
                else:
                    export_torchscript(module, inputs, path)
                entry: dict[str, Any] = {"component": name, "format": fmt, "precision": precision}
                if verify:
                    diff = max_difference(name, module, parts, path, check_lens)
                    entry["max_abs_diff"] = diff
                    half = (name, precision) == ("acoustic-model", "fp16")
                    bound = TOLERANCE["acoustic-model-fp16" if half else name]
                    if not diff <= bound:
                        raise RuntimeError(
                            f"{path}: differs from eager PyTorch by {diff:.3g} (tolerance {bound})"
                        )
                log.info(
                    "wrote %s%s",
                    path,
                    f" (max |diff| vs eager {entry['max_abs_diff']:.2e})" if verify else "",
                )
                files[path.name] = entry
    manifest = {
        "labels": list(cfg["labels"]),
        "blank": len(cfg["labels"]),
        "sample_rate": sample_rate,
        "min_samples": parts["feature-extractor"].min_samples,
        "signatures": {n: {"inputs": s.inputs, "outputs": s.outputs} for n, s in SIGNATURES.items()},
        "files": files,
    }
    (output_dir / "export.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _csv(choices: Sequence[str]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        bad = [t for t in items if t not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"choose from {','.join(choices)} (got {text!r})")
        return items

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--ema", action="store_true", help="export the checkpoint's EMA weights")
    parser.add_argument(
        "--format",
        type=_csv(tuple(FORMATS)),
        default=["onnx", "torchscript"],
        help="comma-separated formats: onnx (ONNX Runtime, Triton's onnxruntime backend), torchscript "
        "(libtorch); default: both",
    )
    parser.add_argument(
        "--precision",
        type=_csv(PRECISIONS),
        default=["fp32"],
        help="comma-separated acoustic-model precisions: fp32, fp16 (half-precision compute with fp32 "
        "inputs and outputs, meant for GPUs); default: fp32",
    )
    parser.add_argument(
        "--components",
        type=_csv(COMPONENTS),
        default=list(COMPONENTS),
        help=f"comma-separated parts to export; default: all ({','.join(COMPONENTS)})",
    )
    parser.add_argument("--output_dir", required=True, help="directory for the files and export.json")
    parser.add_argument(
        "--no_verify",
        action="store_true",
        help="skip the check that every exported file matches eager PyTorch on a variable-length batch",
    )
    config.add_override_argument(parser)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    spec = model_spec(args, required=True)
    cfg, model = checkpoint_model(spec, args.model_config, args.ema, args.override_config)
    manifest = export(
        cfg, model, args.output_dir, args.format, args.precision, args.components, verify=not args.no_verify
    )
    print(f"exported {len(manifest['files'])} files to {args.output_dir}")
    return 0
