"""`jasper triton-repo`: write a Triton Inference Server model repository for a checkpoint.

NVIDIA's shape (spec 10.2): a feature extractor, the acoustic model and a greedy decoder, chained
by an `ensemble` that takes `AUDIO_SIGNAL` (float32 samples) with `NUM_SAMPLES` (the true length
of each, since padding is zeros) and returns `TRANSCRIPT` (the text, one string per utterance).
Each stage batches requests dynamically up to `--max_batch_size`, waiting at most
`--max_queue_delay_us` for a batch to fill.

Two flavours:
- cpu: every stage on Triton's Python backend running ONNX Runtime (`jasper/serving/triton_models/model.py`).
  This is what `jasper serve` runs here with the tritonserver binary of the nvidia-pytriton wheel,
  which ships no other backend. The stages pad ragged requests into one batch themselves.
- gpu: the acoustic model on Triton's native `onnxruntime` backend on the GPU (KIND_GPU), for
  NVIDIA's Triton containers; features and decoding stay on the Python backend. Triton's native
  batcher joins only requests of equal padded length, so batches form less often than in cpu.

Unlike the reference, the models are masked and take lengths, so a short utterance batched with
long ones decodes as it would alone, and the decoder returns text rather than frame ids.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jasper import config
from jasper.hub.models import add_model_arguments, model_spec
from jasper.inference import export
from jasper.model import Jasper

PYTHON_MODEL = Path(__file__).parent / "triton_models" / "model.py"
ENSEMBLE_NAME = "jasper"
DEFAULT_MAX_DURATION = 35.0  # seconds: the longest LibriSpeech test utterance is 34.96 s
FLAVOURS = ("cpu", "gpu")
STAGES = export.COMPONENTS  # the models the ensemble chains, in order


@dataclass(frozen=True)
class RepoOptions:
    """What shapes a repository beyond the model: flavour, precision, batching, limits."""

    flavour: str = "cpu"
    precision: str = "fp32"
    max_batch_size: int = 8
    max_queue_delay_us: int = 5000
    max_duration: float = DEFAULT_MAX_DURATION
    instances: int = 1
    intra_op_threads: int = 0
    ensemble_name: str = ENSEMBLE_NAME


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _tensor(name: str, dtype: str, dims: list[int], reshape: list[int] | None = None) -> str:
    text = f"  {{ name: {_quote(name)} data_type: {dtype} dims: {dims}"
    if reshape is not None:
        text += f" reshape: {{ shape: {reshape} }}"
    return text + " }"


def _block(key: str, items: list[str]) -> str:
    return f"{key} [\n" + ",\n".join(items) + "\n]\n"


def _parameters(params: dict[str, Any]) -> str:
    return "".join(
        f"parameters {{ key: {_quote(k)} value: {{ string_value: {_quote(str(v))} }} }}\n"
        for k, v in params.items()
    )


def stage_config(
    stage: str,
    opts: RepoOptions,
    n_feats: int,
    n_classes: int,
    params: dict[str, Any],
) -> str:
    """config.pbtxt of one stage. Tensor names are the ONNX graph's (Triton's onnxruntime needs that)."""
    native = stage == "acoustic-model" and opts.flavour == "gpu"
    lengths_reshape = [] if native else None  # the graph's lengths are [batch]; Triton's are [batch, 1]
    io = {
        "feature-extractor": (
            [_tensor("audio", "TYPE_FP32", [-1]), _tensor("num_samples", "TYPE_INT32", [1])],
            [_tensor("features", "TYPE_FP32", [n_feats, -1]), _tensor("feature_lengths", "TYPE_INT32", [1])],
        ),
        "acoustic-model": (
            [
                _tensor("features", "TYPE_FP32", [n_feats, -1]),
                _tensor("feature_lengths", "TYPE_INT32", [1], lengths_reshape),
            ],
            [
                _tensor("log_probs", "TYPE_FP32", [-1, n_classes]),
                _tensor("output_lengths", "TYPE_INT32", [1], lengths_reshape),
            ],
        ),
        "decoder": (
            [
                _tensor("log_probs", "TYPE_FP32", [-1, n_classes]),
                _tensor("output_lengths", "TYPE_INT32", [1]),
            ],
            [_tensor("transcript", "TYPE_STRING", [1])],
        ),
    }[stage]
    text = f"name: {_quote(stage)}\n"
    text += 'platform: "onnxruntime_onnx"\n' if native else 'backend: "python"\n'
    text += f"max_batch_size: {opts.max_batch_size}\n"
    text += _block("input", io[0]) + _block("output", io[1])
    text += f"dynamic_batching {{ max_queue_delay_microseconds: {opts.max_queue_delay_us} }}\n"
    count = opts.instances if stage == "acoustic-model" else 1
    kind = "KIND_GPU" if native else "KIND_CPU"
    text += f"instance_group [ {{ count: {count} kind: {kind} }} ]\n"
    if not native:
        text += _parameters(params)
    return text


def ensemble_config(opts: RepoOptions) -> str:
    """The ensemble: AUDIO_SIGNAL + NUM_SAMPLES -> features -> log-probs -> TRANSCRIPT."""
    steps = [
        ("feature-extractor", {"audio": "AUDIO_SIGNAL", "num_samples": "NUM_SAMPLES"},
         {"features": "AUDIO_FEATURES", "feature_lengths": "FEATURE_LENGTHS"}),
        ("acoustic-model", {"features": "AUDIO_FEATURES", "feature_lengths": "FEATURE_LENGTHS"},
         {"log_probs": "CHARACTER_PROBABILITIES", "output_lengths": "OUTPUT_LENGTHS"}),
        ("decoder", {"log_probs": "CHARACTER_PROBABILITIES", "output_lengths": "OUTPUT_LENGTHS"},
         {"transcript": "TRANSCRIPT"}),
    ]  # fmt: skip
    step_text = []
    for model, inputs, outputs in steps:
        maps = "".join(
            f"    input_map {{ key: {_quote(k)} value: {_quote(v)} }}\n" for k, v in inputs.items()
        )
        maps += "".join(
            f"    output_map {{ key: {_quote(k)} value: {_quote(v)} }}\n" for k, v in outputs.items()
        )
        step_text.append(f"  {{\n    model_name: {_quote(model)}\n    model_version: -1\n{maps}  }}")
    text = (
        f'name: {_quote(opts.ensemble_name)}\nplatform: "ensemble"\nmax_batch_size: {opts.max_batch_size}\n'
    )
    text += _block(
        "input", [_tensor("AUDIO_SIGNAL", "TYPE_FP32", [-1]), _tensor("NUM_SAMPLES", "TYPE_INT32", [1])]
    )
    text += _block("output", [_tensor("TRANSCRIPT", "TYPE_STRING", [1])])
    return text + "ensemble_scheduling {\n  step [\n" + ",\n".join(step_text) + "\n  ]\n}\n"


def write_repository(cfg: dict[str, Any], model: Jasper, out: str | Path, opts: RepoOptions) -> Path:
    """Export the model (verified against eager) and lay out the repository under `out`."""
    if opts.flavour not in FLAVOURS:
        raise ValueError(f"flavour must be one of {FLAVOURS}, got {opts.flavour!r}")
    if opts.max_batch_size < 1 or opts.max_queue_delay_us < 0 or opts.max_duration <= 0:
        raise ValueError("max_batch_size must be >= 1, max_queue_delay_us >= 0 and max_duration > 0")
    out = Path(out)
    features = config.section(cfg, "input_val", "filterbank_features")
    with tempfile.TemporaryDirectory() as tmp:
        manifest = export.export(cfg, model, tmp, ["onnx"], [opts.precision])
        files = {
            "feature-extractor": Path(tmp) / "feature-extractor.onnx",
            "acoustic-model": export.export_path(Path(tmp), "acoustic-model", "onnx", opts.precision),
            "decoder": Path(tmp) / "decoder.onnx",
        }
        params = {
            "feature-extractor": {
                "min_samples": manifest["min_samples"],
                "max_samples": int(opts.max_duration * features["sample_rate"]),
            },
            "acoustic-model": {},
            "decoder": {"labels": json.dumps(manifest["labels"])},
        }
        if out.exists():
            shutil.rmtree(out)
        for stage in STAGES:
            version = out / stage / "1"
            version.mkdir(parents=True)
            shutil.copy2(files[stage], version / "model.onnx")
            native = stage == "acoustic-model" and opts.flavour == "gpu"
            if not native:
                shutil.copy2(PYTHON_MODEL, version / "model.py")
            stage_params = {"component": stage, "onnx_file": "model.onnx", **params[stage]}
            if opts.intra_op_threads:
                stage_params["intra_op_threads"] = opts.intra_op_threads
            text = stage_config(stage, opts, features["n_filt"], len(manifest["labels"]) + 1, stage_params)
            (out / stage / "config.pbtxt").write_text(text)
    (out / opts.ensemble_name / "1").mkdir(parents=True)
    (out / opts.ensemble_name / "config.pbtxt").write_text(ensemble_config(opts))
    return out


def validate_repository(repo: str | Path) -> list[str]:
    """Parse every config.pbtxt with Triton's own ModelConfig schema; returns the model names.

    Catches misspelt fields and wrong types without a server (needs `tritonclient[grpc]`), and
    checks that each model has a version directory with its file.
    """
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    names = []
    for path in sorted(Path(repo).glob("*/config.pbtxt")):
        cfg = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
        if cfg.name != path.parent.name:
            raise ValueError(f"{path}: name {cfg.name!r} differs from its directory")
        version = path.parent / "1"
        wanted = (
            None if cfg.platform == "ensemble" else "model.py" if cfg.backend == "python" else "model.onnx"
        )
        if not version.is_dir() or (wanted and not (version / wanted).is_file()):
            raise ValueError(f"{path.parent}: missing {version / (wanted or '')}")
        names.append(cfg.name)
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = RepoOptions()
    add_model_arguments(parser)
    parser.add_argument("--ema", action="store_true", help="serve the checkpoint's EMA weights")
    parser.add_argument("--out", required=True, help="repository directory to write (replaced if it exists)")
    parser.add_argument(
        "--flavour",
        choices=FLAVOURS,
        default=defaults.flavour,
        help="cpu: every stage on the Python backend with ONNX Runtime (runs with `jasper serve`); "
        "gpu: the acoustic model on Triton's onnxruntime backend on a GPU (NVIDIA's Triton containers)",
    )
    parser.add_argument(
        "--precision",
        choices=export.PRECISIONS,
        default=defaults.precision,
        help="acoustic model compute precision; inputs and outputs stay fp32 (default: %(default)s)",
    )
    parser.add_argument(
        "--max_batch_size",
        type=int,
        default=defaults.max_batch_size,
        help="largest batch (default: %(default)s)",
    )
    parser.add_argument(
        "--max_queue_delay_us",
        type=int,
        default=defaults.max_queue_delay_us,
        help="how long the dynamic batcher may hold a request to fill a batch, microseconds "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--max_duration",
        type=float,
        default=None,
        help="longest audio accepted, seconds; longer requests get an error (default: the config's "
        f"input_val max_duration when finite, else {DEFAULT_MAX_DURATION})",
    )
    parser.add_argument(
        "--instances",
        type=int,
        default=defaults.instances,
        help="acoustic-model instances (parallel executions) (default: %(default)s)",
    )
    parser.add_argument(
        "--intra_op_threads",
        type=int,
        default=defaults.intra_op_threads,
        help="ONNX Runtime threads per Python-backend stage; 0 lets it use every core (default: %(default)s)",
    )
    parser.add_argument(
        "--ensemble_name", default=defaults.ensemble_name, help="name clients call (default: %(default)s)"
    )
    config.add_override_argument(parser)


def run(args: argparse.Namespace) -> int:
    spec = model_spec(args, required=True)
    cfg, model = export.checkpoint_model(spec, args.model_config, args.ema, args.override_config)
    max_duration = args.max_duration
    if max_duration is None:
        configured = config.section(cfg, "input_val", "audio_dataset")["max_duration"]
        max_duration = configured if math.isfinite(configured) else DEFAULT_MAX_DURATION
    opts = RepoOptions(
        args.flavour,
        args.precision,
        args.max_batch_size,
        args.max_queue_delay_us,
        max_duration,
        args.instances,
        args.intra_op_threads,
        args.ensemble_name,
    )
    repo = write_repository(cfg, model, args.out, opts)
    try:
        names = validate_repository(repo)
    except ImportError:
        names = [p.parent.name for p in sorted(repo.glob("*/config.pbtxt"))]
        print("(tritonclient[grpc] is not installed: configs written but not schema-checked)")
    print(f"wrote {opts.flavour} repository {repo}: {', '.join(names)}; clients call {opts.ensemble_name!r}")
    return 0
