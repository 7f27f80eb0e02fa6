"""`jasper infer`: evaluate a checkpoint on manifests, transcribe files, time the model.

The arguments are the reference `inference.py`'s, so its scripts and habits carry over. What the
reference got wrong (spec 12.11-14, 12.18) works here:

- several processes (torchrun, NCCL on GPUs or gloo on CPUs) give exactly the WER of one: whole
  batches, formed as a single process would form them, are dealt to the ranks, every utterance is
  evaluated once, and rank 0 merges the hypotheses in dataset order before scoring;
- `--save_predictions` writes `<utterance id><TAB><hypothesis>` lines in dataset (manifest) order,
  the id being the audio file's stem;
- `--save_logits` keeps each utterance's log-probs trimmed to its own output length, so batches
  of different lengths no longer break it; `.npz` (numpy) or any other suffix (torch.save);
- `--torchscript` traces the acoustic model and runs the traced one; `--torchscript_export`
  writes the feature extractor, acoustic model and greedy decoder as TorchScript files;
- files (`--transcribe_wav`, `--transcribe_filelist`) work on CPU too;
- the WER and the latencies (true percentiles, and the mean, which the reference called "50%")
  reach the JSON log (`--log_file`), not only stdout.

Decoding is greedy (or, with `--decoder beam --lm DIR`, CTC beam search with an n-gram word LM)
and never reads past each utterance's output length. Features are computed
with PyTorch on the model's device (`--dali_device` is accepted and ignored: there is no DALI).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import time
import warnings
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Sampler

from jasper import config, distributed
from jasper.data import AudioDataset, Batch, build_loader, load_utterances, unique_ids
from jasper.decoding import decode_ids, greedy_ids
from jasper.device import PRECISIONS, inference_dtype
from jasper.faults import Skipped
from jasper.features import FilterbankFeatures
from jasper.hub.models import add_model_arguments, config_of, model_spec, read_checkpoint
from jasper.inference import engines
from jasper.inference.engines import ENGINES
from jasper.inference.pipeline import (
    CHUNK_OVERLAP,
    CHUNK_SECONDS,
    PAD_LEADING,
    calibration_inputs,
    iter_transcribe,
    model_from_checkpoint,
    output_stride,
)
from jasper.inference.timing import LatencyStats, synchronize
from jasper.metrics import char_errors, word_errors
from jasper.model import Jasper
from jasper.text import Tokenizer

log = logging.getLogger(__name__)

STAGES = ("data", "dnn", "data+dnn")


class BatchShardSampler(Sampler[list[int]]):
    """Batches of similar duration formed over the whole dataset, then dealt round-robin to ranks.

    Batch composition does not depend on the number of processes, and features of an utterance
    depend slightly on its batch (padding reaches its last STFT frame, spec 3.1), so N processes
    compute exactly what one does. With `drop_last` (benchmark mode) every batch is full.
    """

    def __init__(
        self,
        durations: Sequence[float],
        batch_size: int,
        num_replicas: int = 1,
        rank: int = 0,
        drop_last: bool = False,
    ) -> None:
        order = np.argsort(np.asarray(durations, dtype=np.float64), kind="stable")
        batches = [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]
        if drop_last and batches and len(batches[-1]) < batch_size:
            batches.pop()
        self.batches = batches[rank::num_replicas]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


@dataclass
class Outputs:
    """One process's results: hypotheses (and log-probs) by utterance index, timings in seconds."""

    hypotheses: dict[int, str] = field(default_factory=dict)
    logits: dict[int, np.ndarray] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)  # utterances whose audio could not be read
    timings: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))


def _forever(loader: Any) -> Iterator[Batch]:
    while True:
        yield from loader


def calibration_batches(
    features: nn.Module, loader: Any, pad_leading: int, batches: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The loader's first `batches` batches as `run_batches` feeds them to the model: what int8
    (`jasper.inference.engines.prepare`) calibrates its activation ranges on."""
    for i, batch in enumerate(loader):
        if i == batches:
            return
        if len(batch):
            feats, lens = features(batch.audio, batch.audio_lens)
            yield F.pad(feats, (pad_leading, 0)), lens + pad_leading


@torch.inference_mode()
def run_batches(
    model: nn.Module,
    features: nn.Module,
    loader: Any,
    tokenizer: Tokenizer,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    pad_leading: int = 0,
    steps: int = 0,
    warmup_steps: int = 0,
    keep_logits: bool = False,
) -> Outputs:
    """Greedy transcripts for the loader's batches; with `steps > 0`, loop it for warmup + steps batches.

    Timed per batch, with device synchronisation: `data` (loader wait and features), `dnn` (cast,
    leading pad, acoustic model, argmax) and their sum. The first batch and warmup batches are
    not timed.
    """
    out = Outputs()
    if steps > 0:
        if len(loader) == 0:
            raise config.ConfigError("benchmark mode needs at least one full batch per process")
        batches, iterations = _forever(loader), steps + warmup_steps
    else:
        batches, iterations = iter(loader), len(loader)
    t0 = time.perf_counter()
    for it in range(iterations):
        batch = next(batches)
        out.failures += [f.error for f in batch.failures]
        if len(batch) == 0:
            continue
        batch = batch.to(device, non_blocking=True)
        feats, feat_lens = features(batch.audio, batch.audio_lens)
        synchronize(device)
        t1 = time.perf_counter()
        feats = feats.to(dtype)
        if pad_leading:
            feats = F.pad(feats, (pad_leading, 0))
            feat_lens = feat_lens + pad_leading
        log_probs, out_lens = model(feats, feat_lens)
        ids = greedy_ids(log_probs, out_lens, tokenizer.blank)
        synchronize(device)
        t2 = time.perf_counter()
        if it >= max(warmup_steps, 1):
            for stage, seconds in zip(STAGES, (t1 - t0, t2 - t1, t2 - t0), strict=True):
                out.timings[stage].append(seconds)
        texts = decode_ids(ids, out_lens, tokenizer)
        lengths = out_lens.tolist()
        for j, index in enumerate(batch.indices.tolist()):
            out.hypotheses[index] = texts[j]
            if keep_logits:
                out.logits[index] = log_probs[j, : lengths[j]].float().cpu().numpy()
        synchronize(device)
        t0 = time.perf_counter()
    return out


def gather(outputs: Outputs, ctx: distributed.Context) -> Outputs:
    """Rank 0 gets every rank's hypotheses and logits (keeping its own timings); others get theirs."""
    if not ctx.distributed:
        return outputs
    parts: list[Any] | None = [None] * ctx.world_size if ctx.is_main else None
    dist.gather_object((outputs.hypotheses, outputs.logits, outputs.failures), parts, dst=0)
    if not ctx.is_main:
        return outputs
    merged = Outputs(timings=outputs.timings)
    for hyps, logits, failures in parts:
        merged.hypotheses.update(hyps)
        merged.logits.update(logits)
        merged.failures += failures
    return merged


def write_predictions(path: str | Path, ids: Sequence[str], texts: Sequence[str]) -> None:
    """`<id>\\t<text>` per line, in the given order; a repeated id gets `#2`, `#3`, ... (`unique_ids`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{i}\t{t}\n" for i, t in zip(unique_ids(ids), texts, strict=True)))


def save_logits(path: str | Path, ids: Sequence[str], logits: Sequence[np.ndarray]) -> None:
    """Per-utterance log-probs `[T_i, n_classes]` (float32), each trimmed to its output length.

    `.npz`: one array per utterance id, plus `_ids` (dataset order) and `_lengths` (T_i), read with
    `numpy.load(path)`. Other suffixes: `torch.save` of `{"ids": [...], "lengths": int64 tensor,
    "logits": {id: tensor}}`, read with `torch.load(path)`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = unique_ids(ids)
    lengths = [a.shape[0] for a in logits]
    if path.suffix == ".npz":
        arrays = dict(zip(keys, logits, strict=True))
        np.savez(path, _ids=np.array(keys, dtype=str), _lengths=np.array(lengths, dtype=np.int64), **arrays)
    else:
        torch.save(
            {
                "ids": keys,
                "lengths": torch.tensor(lengths, dtype=torch.int64),
                "logits": {k: torch.from_numpy(a) for k, a in zip(keys, logits, strict=True)},
            },
            path,
        )


class GreedyDecoder(nn.Module):
    """`greedy_ids` as a module, so it can be scripted and exported next to the acoustic model."""

    def __init__(self, blank: int) -> None:
        super().__init__()
        self.blank = blank

    def forward(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return greedy_ids(log_probs, lengths, self.blank)


def _quietly(fn: Any, *args: Any, **kwargs: Any) -> Any:
    # torch.jit is deprecated upstream but still what Triton's libtorch backend loads; shapes and
    # lengths stay dynamic in these traces (checked in the tests), so its warnings are noise here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def _trace(module: nn.Module, example: tuple[torch.Tensor, ...]) -> torch.jit.ScriptModule:
    return _quietly(torch.jit.trace, module, example, check_trace=False)


def trace_model(
    model: nn.Module, n_feats: int, device: torch.device, dtype: torch.dtype
) -> torch.jit.ScriptModule:
    """The acoustic model traced on a small example; it runs any batch size and length."""
    example = (
        torch.randn(2, n_feats, 224, device=device, dtype=dtype),
        torch.tensor([224, 160], dtype=torch.int32, device=device),
    )
    return _trace(model, example)


def export_torchscript(
    model: nn.Module,
    features: FilterbankFeatures,
    tokenizer: Tokenizer,
    output_dir: str | Path,
    stem: str,
    dtype: torch.dtype,
    device: torch.device,
) -> list[Path]:
    """Write `<stem>_{fp32|bf16|fp16}_{feat,acoustic,decoder}.pt` (traced, traced, scripted); the paths.

    feat: float32 audio `[B, L]` + int32 lengths -> features `[B, n_filt, T]` + lengths (always
    float32); acoustic: features in `dtype` + lengths -> log-probs + lengths; decoder: log-probs +
    lengths -> int32 ids, blank beyond each length.
    """
    precision = next(name for name, d in PRECISIONS.items() if d == dtype)
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    audio = torch.randn(2, features.sample_rate * 2, device=device)
    audio_lens = torch.tensor([audio.shape[1], audio.shape[1] // 2], dtype=torch.int32, device=device)
    modules = {
        "feat": _trace(features, (audio, audio_lens)),
        "acoustic": trace_model(model, features.n_filt, device, dtype),
        "decoder": _quietly(torch.jit.script, GreedyDecoder(tokenizer.blank)),
    }
    paths = []
    for name, module in modules.items():
        path = out_dir / f"{stem}_{precision}_{name}.pt"
        module.save(str(path))
        paths.append(path)
    return paths


class JsonLog:
    """JSON lines log: one `{"time", "event", ...}` object per record. Inactive without a path."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path else None
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("")

    def write(self, event: str, data: dict[str, Any]) -> None:
        if self.path is None:
            return
        record = {
            "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "event": event,
            **data,
        }
        with self.path.open("a") as f:
            f.write(json.dumps(record, default=str) + "\n")


def latency_summary(timings: dict[str, list[float]]) -> dict[str, float]:
    """`<stage>_latency_{0_9,0_95,0_99,avg}` in ms per batch, plus the sample count."""
    out: dict[str, float] = {}
    for stage in STAGES:
        stats = LatencyStats.from_ms([s * 1e3 for s in timings.get(stage, [])])
        out |= {
            f"{stage}_latency_0_9": stats.p90,
            f"{stage}_latency_0_95": stats.p95,
            f"{stage}_latency_0_99": stats.p99,
            f"{stage}_latency_avg": stats.mean,
        }
        out["latency_samples"] = stats.n
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch_size", type=int, default=16, help="utterances per batch and process")
    parser.add_argument(
        "--steps",
        type=int,
        default=0,
        help="benchmark mode when > 0: run this many timed batches, looping the dataset (full batches only)",
    )
    parser.add_argument("--warmup_steps", type=int, default=0, help="untimed batches before the timed ones")
    parser.add_argument("--dataset_dir", default=None, help="root that manifest audio paths are relative to")
    parser.add_argument("--val_manifests", nargs="+", default=None, help="manifests to evaluate")
    add_model_arguments(parser, optional="; without one, random weights in --model_config's model")
    parser.add_argument(
        "--pad_leading",
        type=int,
        default=None,
        help="zero feature frames prepended to every utterance (lengths grow by as much; default: the "
        "model's own: 16, or 0 for NeMo models)",
    )
    parser.add_argument(
        "--amp", "--fp16", action="store_true", help="half precision on CUDA (model.half()); ignored on CPU"
    )
    parser.add_argument(
        "--precision",
        choices=sorted(PRECISIONS),
        default=None,
        help="dtype of the model's weights: fp32 (default; fp16 with --amp on CUDA), bf16 (faster on CPUs "
        "with AVX512-BF16 or AMX and on GPUs), fp16 (CUDA only), int8 (int8 convolutions on CPU, their "
        "activation ranges calibrated on the first --calibration_batches batches of the manifests)",
    )
    parser.add_argument(
        "--calibration_batches",
        type=int,
        default=4,
        help="batches that calibrate --precision int8 (default: %(default)s); with --transcribe_wav or "
        "--transcribe_filelist, the first 30 s of this many files",
    )
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default="torch",
        help="torch (default): eager PyTorch; onnxruntime: the acoustic model exported to ONNX (cached in "
        "$XDG_CACHE_HOME/jasper/onnxruntime) and run in ONNX Runtime on the CPU, fp32 or int8 (static "
        "quantization calibrated like --precision int8); needs .[export]",
    )
    parser.add_argument(
        "--cudnn_benchmark", action="store_true", help="let cuDNN pick the fastest algorithms"
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="run the model through torch.compile at bucketed lengths (--engine torch, not int8; each new "
        "length bucket compiles once, tens of seconds on a CPU; docs/benchmarks.md 'Compiled graphs on CPU')",
    )
    parser.add_argument("--cpu", action="store_true", help="run on CPU even if CUDA is available")
    parser.add_argument(
        "--seed", type=int, default=None, help="seed torch, numpy and random with SEED + local rank"
    )
    parser.add_argument(
        "--local_rank",
        type=int,
        default=int(os.environ.get("LOCAL_RANK", 0)),
        help="accepted for torch.distributed.launch; torchrun's LOCAL_RANK is what is used",
    )
    parser.add_argument(
        "--dali_device",
        choices=["none", "cpu", "gpu"],
        default="gpu",
        help="accepted for compatibility and ignored: features are always computed with PyTorch",
    )
    parser.add_argument(
        "--save_predictions",
        default=None,
        help="write `<utterance id><TAB><hypothesis>` lines in dataset order (id = audio file stem)",
    )
    parser.add_argument(
        "--save_logits",
        default=None,
        help="save per-utterance log-probs trimmed to each output length: .npz for numpy, else torch.save",
    )
    parser.add_argument("--transcribe_wav", default=None, help="transcribe one audio file (any format)")
    parser.add_argument(
        "--transcribe_filelist", default=None, help="transcribe the audio files listed, one per line"
    )
    parser.add_argument("-o", "--output_dir", default="results/", help="for the log and TorchScript exports")
    parser.add_argument(
        "--log_file", default=None, help="JSON lines log (default: OUTPUT_DIR/nvlog_infer.json)"
    )
    parser.add_argument("--ema", action="store_true", help="load the checkpoint's EMA weights")
    parser.add_argument(
        "--torchscript", action="store_true", help="trace the acoustic model and run the trace"
    )
    parser.add_argument(
        "--torchscript_export",
        action="store_true",
        help="write OUTPUT_DIR/<config stem>_{fp16|fp32}_{feat,acoustic,decoder}.pt and continue",
    )
    config.add_override_argument(parser)
    parser.add_argument(
        "--strict",
        action="store_true",
        help="stop at the first missing or unreadable audio file (default: report it, leave it out of "
        "the WER and predictions, go on, exit 3)",
    )
    parser.add_argument("--workers", type=int, default=4, help="data loader processes (default: %(default)s)")
    beam = parser.add_argument_group("beam search with an n-gram LM (jasper lm build)")
    beam.add_argument(
        "--decoder", choices=["greedy", "beam"], default="greedy", help="greedy CTC (default) or beam search"
    )
    beam.add_argument(
        "--lm", default=None, help="LM directory from `jasper lm build` (beam only; none: no LM)"
    )
    beam.add_argument("--beam_width", type=int, default=64, help="beams kept per frame (default 64)")
    beam.add_argument("--alpha", type=float, default=None, help="LM weight (default: the LM's tuned.json)")
    beam.add_argument("--beta", type=float, default=None, help="word bonus (default: the LM's tuned.json)")
    beam.add_argument("--decoder_workers", type=int, default=1, help="beam-search processes (default 1)")


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run(args: argparse.Namespace) -> int:
    ctx = distributed.init("cpu" if args.cpu else None)
    try:
        return _run(args, ctx)
    finally:
        distributed.shutdown()


def _run(args: argparse.Namespace, ctx: distributed.Context) -> int:
    device = ctx.device
    if args.seed is not None:
        _seed(args.seed + ctx.local_rank)
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    if args.precision is None and args.amp and device.type != "cuda":
        log.warning("--amp: half precision needs CUDA; running float32 on %s", device)
    precision = args.precision or ("fp16" if args.amp and device.type == "cuda" else "fp32")
    dtype = inference_dtype(precision, device)
    engines.check(args.engine, precision, device)

    spec = model_spec(args)
    state = read_checkpoint(spec) if spec else None
    cfg = config_of(state, args.model_config, args.override_config, source=str(spec))
    tokenizer = Tokenizer(cfg["labels"])
    if args.pad_leading is None:
        args.pad_leading = int(state.get("pad_leading", PAD_LEADING)) if state else PAD_LEADING
    if state is not None:
        model = model_from_checkpoint(cfg, state, args.ema, source=str(spec))
        del state
    else:
        model = Jasper.from_config(cfg)
        if ctx.is_main:
            log.warning("no --ckpt: the model has random weights")
    model.eval().to(device=device, dtype=dtype)
    stride = output_stride(model)
    features = FilterbankFeatures(**config.section(cfg, "input_val", "filterbank_features"))
    features.eval().to(device)
    output_dir = Path(args.output_dir)
    json_log = JsonLog((args.log_file or output_dir / "nvlog_infer.json") if ctx.is_main else None)
    json_log.write(
        "args",
        {k: v for k, v in vars(args).items() if not k.startswith("_")}
        | {"world_size": ctx.world_size, "device": str(device)},
    )

    if args.torchscript_export and ctx.is_main:
        stem = Path(args.model_config or spec).stem
        for path in export_torchscript(model, features, tokenizer, output_dir, stem, dtype, device):
            print(f"exported {path}")
    if args.torchscript:
        if precision == "int8" or args.engine != "torch":
            raise config.ConfigError(
                "--torchscript traces the eager fp32/bf16/fp16 model: leave out --precision int8 and --engine"
            )
        model = trace_model(model, features.n_filt, device, dtype)

    if args.transcribe_wav or args.transcribe_filelist:
        return _transcribe_files(args, ctx, model, features, tokenizer, stride, precision)
    if not args.val_manifests:
        raise config.ConfigError(
            "nothing to do: give --val_manifests, --transcribe_wav or --transcribe_filelist"
        )

    ds_cfg = config.section(cfg, "input_val", "audio_dataset")
    skipped = Skipped("infer", strict=args.strict)
    utterances, stats = load_utterances(
        args.val_manifests, args.dataset_dir or ".", tokenizer, ds_cfg, skip_bad=not args.strict
    )
    if ctx.is_main:
        print(f"dataset: {stats.summary()}", flush=True)
        for message in stats.skipped:
            skipped.add_message(message)
    dataset = AudioDataset(utterances, ds_cfg, skip_bad=not args.strict)
    sampler = BatchShardSampler(
        dataset.durations(), args.batch_size, ctx.world_size, ctx.rank, drop_last=args.steps > 0
    )
    loader = build_loader(dataset, sampler, workers=args.workers)
    if precision == "int8" or args.engine != "torch":
        if ctx.distributed:  # each rank would calibrate on its own batches: WERs no longer equal
            raise config.ConfigError(
                "--precision int8 and --engine onnxruntime run in one process (NUM_GPUS=1)"
            )
        calibration = calibration_batches(
            features, loader, args.pad_leading, args.calibration_batches if precision == "int8" else 1
        )
        model = engines.prepare(model, args.engine, precision, calibration)
    if args.compile:
        model = engines.graphed(model, "compile", device, precision)
    outputs = run_batches(
        model,
        features,
        loader,
        tokenizer,
        device,
        dtype,
        args.pad_leading,
        args.steps,
        args.warmup_steps,
        keep_logits=bool(args.save_logits) or args.decoder == "beam",
    )
    outputs = gather(outputs, ctx)
    if not ctx.is_main:
        return 0
    for message in outputs.failures:
        skipped.add_message(message)
    order = sorted(outputs.hypotheses)
    if args.decoder == "beam":
        from jasper.lm.beam import BeamSearchDecoder

        with BeamSearchDecoder(
            tokenizer.labels,
            args.lm,
            beam_width=args.beam_width,
            alpha=args.alpha,
            beta=args.beta,
            workers=args.decoder_workers,
        ) as decoder:
            beamed = decoder.decode_batch([outputs.logits[i] for i in order])
        outputs.hypotheses.update(zip(order, beamed, strict=True))
    hyps = [outputs.hypotheses[i] for i in order]
    refs = [utterances[i].text for i in order]
    words, chars = word_errors(hyps, refs), char_errors(hyps, refs)
    result = {
        "eval_wer": 100 * words.rate,
        "eval_cer": 100 * chars.rate,
        "utterances": len(order),
        "word_errors": words.errors,
        "words": words.units,
        "substitutions": words.substitutions,
        "deletions": words.deletions,
        "insertions": words.insertions,
    }
    print(
        f"eval_wer {result['eval_wer']:.3f}%  eval_cer {result['eval_cer']:.3f}%  "
        f"({words.errors}/{words.units} words, {len(order)} utterances, {ctx.world_size} process(es))"
    )
    json_log.write("eval", result)
    if outputs.timings:
        latency = latency_summary(outputs.timings)
        json_log.write("latency", latency)
        for stage in STAGES:
            print(
                f"{stage:>8} latency (ms/batch): 90% {latency[f'{stage}_latency_0_9']:.2f}  "
                f"95% {latency[f'{stage}_latency_0_95']:.2f}  99% {latency[f'{stage}_latency_0_99']:.2f}  "
                f"avg {latency[f'{stage}_latency_avg']:.2f}  (n={latency['latency_samples']})"
            )
    ids = [utterances[i].id for i in order]
    if args.save_predictions:
        write_predictions(args.save_predictions, ids, hyps)
        print(f"predictions: {args.save_predictions}")
    if args.save_logits:
        save_logits(args.save_logits, ids, [outputs.logits[i] for i in order])
        print(f"logits: {args.save_logits}")
    return skipped.finish(len(order), "utterances")


def _transcribe_files(
    args: argparse.Namespace,
    ctx: distributed.Context,
    model: nn.Module,
    features: FilterbankFeatures,
    tokenizer: Tokenizer,
    stride: int,
    precision: str,
) -> int:
    """The reference's file modes: print `Prediction   N: text` per file (rank 0 does the work).
    int8 calibrates on the first `--calibration_batches` files."""
    if not ctx.is_main:
        return 0
    if args.transcribe_wav:
        paths = [Path(args.transcribe_wav)]
    else:
        try:
            lines = Path(args.transcribe_filelist).read_text().splitlines()
        except OSError as e:
            raise config.ConfigError(
                f"--transcribe_filelist: cannot read {args.transcribe_filelist} ({e})"
            ) from None
        paths = [Path(line.strip()) for line in lines if line.strip()]
    if precision == "int8" or args.engine != "torch":
        files = args.calibration_batches if precision == "int8" else 1
        calibration = calibration_inputs(paths, features, args.pad_leading, files)
        if precision == "int8" and not calibration:
            raise config.ConfigError("--precision int8: none of the files could be read to calibrate on")
        model = engines.prepare(model, args.engine, precision, calibration)
    if args.compile:
        model = engines.graphed(model, "compile", ctx.device, precision)
    skipped = Skipped("infer", strict=args.strict)
    results = iter_transcribe(
        paths,
        model,
        features,
        tokenizer,
        CHUNK_SECONDS,
        CHUNK_OVERLAP,
        args.pad_leading,
        stride,
        on_error=skipped.add,
    )
    stems, texts = [], []
    for n, result in enumerate(results, 1):
        print(f"Prediction {n:>3}: {result.text}", flush=True)
        stems.append(result.path.stem)
        texts.append(result.text)
    if args.save_predictions:
        write_predictions(args.save_predictions, stems, texts)
    return skipped.finish(len(texts))
