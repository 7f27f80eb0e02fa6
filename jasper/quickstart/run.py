"""`jasper quickstart`: speech in, a trained Jasper, word error rates, plots and a report, on any machine.

On a machine without LibriSpeech or a GPU (the embedded default) it runs the whole system for real:
1. renders a synthetic speech corpus with offline TTS voices (`jasper data synth`; cached), and with
   `--transform` gives each training utterance a voice, room and channel of its own
   (`jasper data transform`; cached),
2. prepares the real LibriSpeech clips in `../shared/data/librispeech-real-mini` (`jasper data prepare`),
3. builds a word LM from the training sentences only (`jasper lm build`; when KenLM is installed),
4. trains a CPU-sized Jasper through `scripts/train.sh` (the real training path) for `--minutes`,
5. evaluates it (`jasper infer`) on the synthetic test split, whose voices and sentences were never
   trained on, on the dev split, and on the real LibriSpeech clips, with greedy and LM decoding,
6. writes `report.md`, `summary.json` and PNG plots to `--output_dir`.

Every step is a real command, printed before it runs and repeated in the report. Ctrl-C keeps what
is done; running the same command again resumes (the corpus and LM are cached, training resumes
from its last checkpoint and stops when its time budget, counted across runs, is spent). A larger
`--minutes` continues training the same model.

With `DATA_DIR` pointing at a prepared LibriSpeech (`librispeech-*-wav.json` manifests) and a GPU,
`scripts/quickstart.sh` runs the reference recipe (`scripts/train.sh` with its defaults) instead.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jasper.datasets.synthetic import ENGINES, SynthOptions, budgets
from jasper.datasets.transform import LEVERS
from jasper.device import has_native_bf16
from jasper.faults import SKIPPED_EXIT

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
MINI = SHARED / "data" / "librispeech-real-mini"
SENTENCES = [
    SHARED / "data" / "text" / "sentences-public.txt",
    SHARED / "data" / "text" / "sentences-extra.txt",
]
STAGES = 6
# The LR schedule runs on the time budget "as if EPOCHS epochs fit in it" (warmup: 3% of the budget);
# EPOCHS also caps training, so it is far above what any budget reaches on a CPU (it was 100, which
# a 2-hour budget on the whole corpus would pass).
EPOCHS = 1000
# Every SAVE_EVERY-th epoch's checkpoint is kept: the report's error-rate-vs-minutes curve on the
# unseen voices evaluates each of them.
SAVE_EVERY = 5
# Kokoro is opt-in: at the default budget its hour of audio cost about 21 minutes of rendering for no gain.
DEFAULT_ENGINES = ("espeak", "flite", "festival", "piper")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--minutes",
        type=float,
        default=12.0,
        help="training budget in minutes (default 12: about 17 minutes in all on 2 cores, corpus included)",
    )
    parser.add_argument(
        "--hours",
        type=float,
        default=5.0,
        help="size of the synthetic corpus in hours of audio, all splits, with the training share times "
        "--train_readings (default 5; rendering takes about 40 seconds per hour of audio on 2 cores; a "
        "second run reuses it)",
    )
    parser.add_argument(
        "--train_readings",
        type=int,
        default=1,
        help="make the corpus's training share this many times as large, reading each training sentence "
        "up to this many times by different voices, new sentences first (jasper data synth "
        "--train_readings; default 1)",
    )
    parser.add_argument(
        "--engines",
        nargs="+",
        choices=ENGINES,
        default=list(DEFAULT_ENGINES),
        help="TTS engines of the corpus (default: espeak flite festival piper). Add kokoro for Kokoro-82M's "
        "330 speakers: it renders at about 2.8x real time on 2 cores (about 21 minutes per hour of its "
        "audio, against seconds for the others), and 1 h of it in a 4 h corpus left the unseen-voice error "
        "where it was at the 12-minute budget (docs/experiments.md, 'Hundreds of voices')",
    )
    parser.add_argument(
        "--transform",
        nargs="*",
        choices=LEVERS,
        default=[],
        metavar="LEVER",
        help=f"voice transformation of every training utterance ({', '.join(LEVERS)}; jasper data "
        "transform): a derived corpus in which no two training utterances share a voice, room or "
        "channel; dev and test stay the clean corpus's (default: none: each lever alone made the "
        "unseen-voice error worse at 12 minutes, docs/experiments.md 'Voice transformation')",
    )
    parser.add_argument(
        "--output_dir",
        type=Path,
        default=REPO / "quickstart-output",
        help="report, plots, predictions and the training run (default ./quickstart-output)",
    )
    parser.add_argument(
        "--cache_dir",
        type=Path,
        default=REPO / "data" / "quickstart",
        help="the synthetic corpus, prepared clips and LM, reused across runs",
    )
    parser.add_argument(
        "--model_config",
        type=Path,
        default=REPO / "configs" / "jasper5x3_cpu.yaml",
        help="model config to train (default configs/jasper5x3_cpu.yaml)",
    )
    parser.add_argument("--batch_size", type=int, default=16, help="utterances per update (default 16)")
    parser.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (default 3e-3, AdamW)")
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="CPU threads for training (default: all cores)",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the corpus and the training run")
    parser.add_argument("--no_lm", action="store_true", help="skip the n-gram LM and beam-search decoding")
    parser.add_argument(
        "--amp",
        choices=["auto", "on", "off"],
        default="auto",
        help="bf16 autocast for training: auto = on where the CPU has native bf16 (AVX512-BF16, "
        "AMX), where it measured 30%% faster at equal accuracy; elsewhere it is slower",
    )


def corpus_dir(cache: Path, engines: list[str]) -> Path:
    """Where the corpus of these engines is cached: `synth` for the default ones, else named for them."""
    if sorted(engines) == sorted(DEFAULT_ENGINES):
        return cache / "synth"
    return cache / ("synth-" + "-".join(sorted(set(engines))))


def run(args: argparse.Namespace) -> int:
    out: Path = args.output_dir.resolve()
    cache: Path = args.cache_dir.resolve()
    out.mkdir(parents=True, exist_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    log = CommandLog(out / "commands.sh")
    started = time.time()

    shares = budgets(SynthOptions(out=cache, hours=args.hours, train_readings=args.train_readings))
    hours = sum(seconds for seconds, _ in shares.values()) / 3600
    size = f"{hours:g} h of TTS speech" if math.isfinite(hours) else "every sentence"
    synth = corpus_dir(cache, args.engines)
    stage(1, f"synthetic corpus ({size}) in {synth}")
    log.run(
        [
            *(jasper(), "data", "synth", "--out", str(synth), "--hours", str(args.hours)),
            *("--train_readings", str(args.train_readings), "--seed", str(args.seed)),
            *("--engines", *args.engines),
        ]
    )
    source = synth
    if args.transform:
        synth = source.with_name(f"{source.name}-vt-{'-'.join(args.transform)}")
        log.run(
            [
                *(jasper(), "data", "transform", "--source", str(source), "--out", str(synth)),
                *("--seed", str(args.seed), "--levers", *args.transform),
            ]
        )
    corpus_seconds = time.time() - started

    stage(2, "real LibriSpeech clips")
    real_manifests = prepare_real_clips(cache / "librispeech-mini", log)

    lm_dir = None
    if not args.no_lm:
        stage(3, "word LM from the training sentences (never the dev/test sentences)")
        lm_dir = build_lm(source, cache / "lm", log)
    else:
        stage(3, "word LM skipped (--no_lm)")

    stage(4, f"training {args.model_config.name} for {args.minutes:g} minutes through scripts/train.sh")
    train_dir = out / "train"
    train_started = time.time()
    amp = args.amp == "on" or (args.amp == "auto" and has_native_bf16())
    train_env = {
        "DATA_DIR": str(synth),
        "MODEL_CONFIG": str(args.model_config),
        "OUTPUT_DIR": str(train_dir),
        "TRAIN_MANIFESTS": str(synth / "synth-train.json"),
        "VAL_MANIFESTS": str(synth / "synth-dev.json"),
        "NUM_GPUS": "1",
        "AMP": str(amp).lower(),
        "EMA": "0",
        "BATCH_SIZE": str(args.batch_size),
        "GRAD_ACCUMULATION_STEPS": "1",
        "LEARNING_RATE": str(args.lr),
        "MIN_LEARNING_RATE": "1e-5",
        "LR_POLICY": "legacy",
        "EPOCHS": str(EPOCHS),
        "WARMUP_EPOCHS": str(EPOCHS * 3 // 100),
        "HOLD_EPOCHS": "0",
        "SEED": str(args.seed),
        "SAVE_FREQUENCY": str(SAVE_EVERY),
        "EVAL_FREQUENCY": "150",
        "PREDICTION_FREQUENCY": "150",
        "RESUME": "true",
        # Pinned too, though they are train.sh's defaults: it reads every variable from the caller's
        # environment, where a leftover CHECKPOINT or EPOCHS_THIS_JOB would change this run.
        "CHECKPOINT": "",
        "EPOCHS_THIS_JOB": "0",
        "PAD_TO_MAX_DURATION": "false",
        "NUM_NODES": "1",
        "NODE_RANK": "0",
        "DALI_DEVICE": "none",
        "OMP_NUM_THREADS": str(args.threads),
        "EXTRA_ARGS": (
            f"--optimizer adamw --weight_decay 1e-3 --time_limit_minutes {args.minutes} "
            f"--lr_schedule_by time --threads {args.threads} --num_workers 0 --save_best_from 0 "
            f"--log_frequency 25 --keep_every {SAVE_EVERY}"
        ),
    }
    rc = log.run(["bash", str(REPO / "scripts" / "train.sh")], env=train_env, check=False)
    if rc not in (0,):
        print(
            f"quickstart: training exited with {rc}; what it saved is kept, run again to resume",
            file=sys.stderr,
        )
        return rc
    train_wall = time.time() - train_started
    ckpt = newest_checkpoint(train_dir)

    stage(5, "evaluation: synthetic test (unseen voices and sentences), dev, real LibriSpeech")
    splits = {
        "synth-test": (synth, [synth / "synth-test.json"]),
        "synth-dev": (synth, [synth / "synth-dev.json"]),
    }
    if real_manifests:
        splits["librispeech-real"] = (cache / "librispeech-mini", real_manifests)
    results: dict[str, Any] = {}
    for name, (data_dir, manifests) in splits.items():
        pred, logits = out / f"{name}.predictions", out / f"{name}.logits.npz"
        log.run(
            infer_command(args, ckpt, data_dir, manifests, pred, out / "infer" / f"{name}.json")
            + ["--save_logits", str(logits)],
            outputs=[pred, logits],
            inputs=[ckpt, *manifests],
        )
        results[name] = {
            "manifests": [str(m) for m in manifests],
            "data_dir": str(data_dir),
            "predictions": str(pred),
            "logits": str(logits),
        }
    curve = evaluate_checkpoints(args, train_dir, ckpt, synth, out, log)
    if lm_dir is not None:
        tuned = lm_dir / "tuned.json"
        log.run(
            [
                jasper(),
                "lm",
                "tune",
                "--logits",
                str(out / "synth-dev.logits.npz"),
                "--manifest",
                str(synth / "synth-dev.json"),
                "--dataset_dir",
                str(synth),
                "--lm",
                str(lm_dir),
                *("--alphas", "0.4", "0.6", "0.8", "1.0", "--betas", "1", "1.5", "2", "2.5", "3"),
                *("--beam_width", "64", "--workers", "2"),
                "--out",
                str(tuned),
            ],
            outputs=[tuned],
            inputs=[out / "synth-dev.logits.npz", lm_dir / "lm.binary"],
        )
        for name in results:
            lm_pred = out / f"{name}.lm.predictions"
            log.run(
                [
                    jasper(),
                    "lm",
                    "decode",
                    "--logits",
                    results[name]["logits"],
                    "--lm",
                    str(lm_dir),
                    *("--beam_width", "64", "--workers", "2"),
                    "--out",
                    str(lm_pred),
                ],
                outputs=[lm_pred],
                inputs=[Path(results[name]["logits"]), tuned],
            )
            results[name]["lm_predictions"] = str(lm_pred)

    stage(6, f"report in {out / 'report.md'}")
    from jasper.quickstart.report import write_report

    write_report(
        out,
        args=vars(args),
        results=results,
        synth_dir=synth,
        train_dir=train_dir,
        commands=log.lines,
        corpus_seconds=corpus_seconds,
        train_wall_seconds=train_wall,
        total_seconds=time.time() - started,
        ckpt=ckpt,
        curve=curve,
    )
    print(f"quickstart: done in {(time.time() - started) / 60:.1f} min; open {out / 'report.md'}")
    return 0


def infer_command(
    args: argparse.Namespace,
    ckpt: Path,
    data_dir: Path,
    manifests: list[Path],
    predictions: Path,
    log_file: Path,
) -> list[str]:
    """`jasper infer` with greedy decoding of `manifests` by `ckpt`, predictions saved."""
    return [
        jasper(),
        "infer",
        "--model_config",
        str(args.model_config),
        "--ckpt",
        str(ckpt),
        "--cpu",
        "--dataset_dir",
        str(data_dir),
        "--val_manifests",
        *map(str, manifests),
        "--pad_leading",
        "0",
        "--workers",
        str(min(2, args.threads)),
        "--batch_size",
        "16",
        "--save_predictions",
        str(predictions),
        "--output_dir",
        str(log_file.parent),
        "--log_file",
        str(log_file),
    ]


def evaluate_checkpoints(
    args: argparse.Namespace, train_dir: Path, final: Path, synth: Path, out: Path, log: CommandLog
) -> list[dict[str, Any]]:
    """Greedy predictions on the unseen-voice test split by every kept epoch checkpoint before `final`.

    With the final model's evaluation these give the report's error-rate-vs-training-minutes curve.
    Each point records the checkpoint's training time counted across runs (`train_seconds`).
    Predictions newer than their checkpoint are reused (a rerun of the quickstart); a checkpoint
    that cannot be read or evaluated is left out with a warning rather than failing the report.
    """
    from jasper.checkpoint import CheckpointError, epoch_checkpoints, epoch_of, read

    last = epoch_of(final) or math.inf
    manifest = synth / "synth-test.json"
    points = []
    for epoch, path in epoch_checkpoints(train_dir):
        if epoch >= last:
            continue
        pred = out / "curve" / f"synth-test.epoch{epoch}.predictions"
        try:
            minutes = read(path).get("train_seconds", math.nan) / 60
        except CheckpointError as e:
            print(f"quickstart: leaving {path.name} out of the curve: {e}", file=sys.stderr)
            continue
        cmd = infer_command(args, path, synth, [manifest], pred, pred.with_suffix(".json"))
        if log.run(cmd, check=False, outputs=[pred], inputs=[path]) != 0:
            print(f"quickstart: leaving {path.name} out of the curve: jasper infer failed", file=sys.stderr)
            continue
        points.append({"epoch": epoch, "minutes": minutes, "predictions": str(pred)})
    return points


def jasper() -> str:
    """The `jasper` console script of this environment (falls back to `python -m jasper.cli`)."""
    exe = Path(sys.executable).parent / "jasper"
    return str(exe) if exe.exists() else f"{sys.executable} -m jasper.cli"


def stage(n: int, text: str) -> None:
    print(f"\n== [{n}/{STAGES}] {text}", flush=True)


class CommandLog:
    """Runs commands, echoing each one, and keeps them so the report can show how to reproduce."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: list[str] = []

    def run(
        self,
        cmd: list[str],
        env: dict[str, str] | None = None,
        check: bool = True,
        outputs: Sequence[Path] = (),
        inputs: Sequence[Path] = (),
    ) -> int:
        """Run `cmd` (logged either way) unless every one of `outputs` is newer than all `inputs`:
        a rerun of the quickstart then reuses what the last run computed from the same checkpoint."""
        words = shlex.split(cmd[0]) + cmd[1:] if " " in cmd[0] else cmd
        env_text = " ".join(f"{k}={shlex.quote(v)}" for k, v in (env or {}).items())
        line = f"{env_text} {shlex.join(words)}".strip()
        self.lines.append(line)
        self.path.write_text(
            "#!/usr/bin/env bash\n# The commands `jasper quickstart` ran, in order.\nset -e\n"
            + "\n".join(self.lines)
            + "\n"
        )
        if outputs and up_to_date(outputs, inputs):
            print(f"$ {line}\n(up to date: {', '.join(p.name for p in outputs)})", flush=True)
            return 0
        print(f"$ {line}", flush=True)
        rc = subprocess.run(words, env={**os.environ, **(env or {})}, cwd=REPO).returncode
        if check and rc not in (0, SKIPPED_EXIT):  # skipped inputs were reported; the rest is usable
            raise SystemExit(f"quickstart: command failed with exit code {rc}: {line}")
        return rc


def up_to_date(outputs: Sequence[Path], inputs: Sequence[Path]) -> bool:
    """True when every output exists and is newer than every input (a missing input: False)."""
    if not all(p.exists() for p in [*outputs, *inputs]):
        return False
    return min(p.stat().st_mtime for p in outputs) > max((p.stat().st_mtime for p in inputs), default=0)


def prepare_real_clips(dest: Path, log: CommandLog) -> list[Path]:
    """`jasper data prepare` on each subset of the real mini LibriSpeech set; [] when it is absent."""
    if not MINI.is_dir():
        print(f"quickstart: {MINI} not found; skipping the real LibriSpeech evaluation")
        return []
    manifests = []
    for subset in sorted(p.name for p in MINI.iterdir() if p.is_dir()):
        manifest = dest / f"librispeech-{subset}-wav.json"
        log.run(
            [
                jasper(),
                "data",
                "prepare",
                "--input_dir",
                str(MINI / subset),
                "--dest_dir",
                str(dest / f"{subset}-wav"),
                "--output_json",
                str(manifest),
                "--parallel",
                "2",
            ]
        )
        manifests.append(manifest)
    return manifests


def build_lm(synth: Path, dest: Path, log: CommandLog) -> Path | None:
    """A 4-gram LM from every shared sentence except those of the synthetic dev and test splits."""
    from jasper.lm.ngram import LMError
    from jasper.lm.tool import find_tool

    try:
        find_tool("lmplz")
    except LMError as e:
        print(f"quickstart: {e}; no LM decoding")
        return None
    held_out = set()
    for split in ("dev", "test"):
        for entry in json.loads((synth / f"synth-{split}.json").read_text()):
            held_out.add(entry["transcript"].strip())
    dest.mkdir(parents=True, exist_ok=True)
    text = dest / "lm-train-sentences.txt"
    kept = [
        s for f in SENTENCES if f.exists() for s in f.read_text().splitlines() if s.strip() not in held_out
    ]
    text.write_text("\n".join(kept) + "\n")
    if (dest / "lm.binary").exists():
        print(f"quickstart: reusing the LM in {dest}")
        return dest
    log.run([jasper(), "lm", "build", "--text", str(text), "--order", "4", "--out", str(dest)])
    return dest


def newest_checkpoint(train_dir: Path) -> Path:
    from jasper.checkpoint import latest_loadable

    found = latest_loadable(train_dir)
    if found is None:
        raise SystemExit(f"quickstart: no checkpoint in {train_dir}")
    return found[0]
