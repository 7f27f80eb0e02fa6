"""Fault soak: kill training at many moments, feed the batch tools bad input, flood the server.

Prints one table (fault, tries, survived, data lost, corrupt checkpoints) and writes it with every
try's details as JSON. Three parts, each run through the commands a user runs:

- **train**: `scripts/train.sh` (tiny config, 6 real clips, 4 epochs of 3 updates, a checkpoint per
  epoch) is SIGKILLed at `--kills` moments: at the start of a random update, or half-way through
  writing a checkpoint. Each killed job is then rerun with `RESUME=true`. A try survives when the
  rerun finishes; it loses data when any visible checkpoint is unreadable, the resume does not
  start from the last checkpoint completed before the kill, the losses after it differ from the
  uninterrupted job's, its final weights differ, or an interrupted save's temp file is left behind.
  The kill comes from a `sitecustomize` hook on the path (no handler or cleanup runs), so the
  moment is exact and repeatable (`--seed`).
- **batch**: `transcribe`, `infer`, `data prepare` and `lm build` on inputs mixing good files with
  empty, truncated, random-byte, NaN and missing ones. A tool survives a bad input when it names it
  as skipped, finishes without a traceback and exits 3; data is lost when a good input has no output.
- **serve**: Triton serving the tiny model (what `jasper serve` starts) gets `--requests` requests
  from `--concurrency` (64) clients, one in ten malformed (empty, too long, NaN audio). It survives
  when it is still up at the end and its RSS grew less than 25 % + 64 MiB after a warm-up; data is
  lost when a good request is refused or transcribed unlike eager PyTorch. Skipped when
  `.venv-triton` is missing.

    python benchmarks/fault_soak.py --kills 20 --output_dir results/fault_soak

Needs the real mini LibriSpeech clips (`--data_dir`, default ../shared/data/librispeech-real-mini).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.yaml"
UPDATES, EPOCHS = 12, 4  # 6 clips, batch 2: 3 updates per epoch, a checkpoint after each epoch
SERVE_MAX_DURATION = 8.0

# Imported by every Python process that has this directory on its path. With JASPER_SOAK_KILL set
# ("update:N" or "save:N") it SIGKILLs the process at the start of update N, or after writing half
# of checkpoint number N, so the kill hits `jasper train` itself and nothing can clean up.
SITECUSTOMIZE = """
import os
if os.environ.get("JASPER_SOAK_KILL"):
    import io, signal, torch
    from jasper.training import train
    kind, n = os.environ.pop("JASPER_SOAK_KILL").split(":")
    calls = {"update": 0, "save": 0}
    set_lr, save = train.set_lr, torch.save

    def set_lr_or_die(optimizer, lr):
        calls["update"] += 1
        if kind == "update" and calls["update"] == int(n):
            os.kill(os.getpid(), signal.SIGKILL)
        set_lr(optimizer, lr)

    def save_or_die(obj, f, *args, **kwargs):
        calls["save"] += 1
        if kind == "save" and calls["save"] == int(n):
            buf = io.BytesIO()
            save(obj, buf)
            f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        save(obj, f, *args, **kwargs)

    train.set_lr, torch.save = set_lr_or_die, save_or_die
"""


@dataclass
class Row:
    """One line of the table: a kind of fault, how often it was tried and what it cost."""

    fault: str
    tries: int = 0
    survived: int = 0
    data_lost: int = 0
    corrupt_checkpoints: int = 0
    details: list[dict[str, Any]] = field(default_factory=list)

    def add(self, survived: bool, lost: bool, corrupt: int = 0, **detail: Any) -> None:
        self.tries += 1
        self.survived += survived
        self.data_lost += lost
        self.corrupt_checkpoints += corrupt
        self.details.append({"survived": survived, "data_lost": lost, "corrupt": corrupt, **detail})


def jasper_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "jasper.cli", *args]


def shortest_clips(data_dir: Path, n: int) -> list[dict[str, Any]]:
    """NeMo manifest rows (paths relative to `data_dir`) of the `n` shortest clips, shortest first."""
    rows = []
    for trans in sorted(data_dir.glob("*/*/*/*.trans.txt")):
        for line in trans.read_text().splitlines():
            uid, text = line.split(" ", 1)
            flac = trans.parent / f"{uid}.flac"
            duration = sf.info(str(flac)).duration
            rows.append(
                {"audio_filepath": str(flac.relative_to(data_dir)), "duration": duration, "text": text}
            )
    return sorted(rows, key=lambda r: r["duration"])[:n]


def write_manifest(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ------------------------------------------------------------------------------------------- train


def kill_points(n: int, seed: int) -> list[str]:
    """`n` kill moments: every second one half-way through a checkpoint save (cycling over the four
    saves), the others at the start of a random update (all twelve used before any repeats)."""
    rng = random.Random(seed)
    updates: list[int] = []
    points = []
    for i in range(n):
        if i % 2 == 1:
            points.append(f"save:{(i // 2) % EPOCHS + 1}")
        else:
            if not updates:
                updates = rng.sample(range(1, UPDATES + 1), UPDATES)
            points.append(f"update:{updates.pop()}")
    return points


def losses_by_update(log_file: Path) -> dict[int, float]:
    """Training loss per global update from a DLLogger JSON log."""
    out = {}
    for line in log_file.read_text().splitlines() if log_file.exists() else []:
        if not line.startswith("DLLL "):
            continue
        r = json.loads(line[5:])
        if r["type"] == "LOG" and len(r["step"]) == 3 and "train_loss" in r["data"]:
            epoch, it, per_epoch = r["step"]
            out[(epoch - 1) * per_epoch + it] = r["data"]["train_loss"]
    return out


def train_sh(out: Path, data_dir: Path, manifests: Path, log_file: Path, kill: str | None, hook: Path) -> int:
    """Run scripts/train.sh as a user would (RESUME=true); returns its exit status (-9: killed)."""
    overrides = [
        "input_train.filterbank_features.spec_augment={'freq_masks':1,'time_masks':1}",
        "input_train.audio_dataset.speed_perturbation={'min_rate':0.9,'max_rate':1.1}",
    ]
    extra = "--num_workers 0 --threads 1 --eval_frequency 1000 --prediction_frequency 1000"
    env = {
        **os.environ,
        "DATA_DIR": str(data_dir),
        "MODEL_CONFIG": str(TINY),
        "OUTPUT_DIR": str(out),
        "TRAIN_MANIFESTS": str(manifests / "train.json"),
        "VAL_MANIFESTS": str(manifests / "val.json"),
        "LOG_FILE": str(log_file),
        "NUM_GPUS": "1",
        "BATCH_SIZE": "2",
        "GRAD_ACCUMULATION_STEPS": "1",
        "EPOCHS": str(EPOCHS),
        "SAVE_FREQUENCY": "1",
        "EMA": "0.9",
        "LEARNING_RATE": "5e-3",
        "RESUME": "true",
        "OMP_NUM_THREADS": "1",
        "EXTRA_ARGS": extra + "".join(f" --override_config {o}" for o in overrides),
        "PYTHONPATH": f"{hook}:{os.environ.get('PYTHONPATH', '')}".rstrip(":"),
    }
    env.pop("JASPER_SOAK_KILL", None)
    if kill:
        env["JASPER_SOAK_KILL"] = kill
    run = subprocess.run(
        ["bash", str(REPO / "scripts" / "train.sh")], env=env, capture_output=True, text=True, timeout=600
    )
    (log_file.with_suffix(".stderr")).write_text(run.stderr)
    return run.returncode


def soak_training(kills: int, seed: int, data_dir: Path, work: Path) -> Row:
    import torch

    from jasper import checkpoint

    row = Row("SIGKILL during training (update or mid-save), then RESUME=true")
    manifests, hook = work / "manifests", work / "hook"
    manifests.mkdir(parents=True)
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    clips = shortest_clips(data_dir, 10)
    write_manifest(manifests / "train.json", clips[:6])
    write_manifest(manifests / "val.json", clips[6:10])

    straight = work / "straight"
    rc = train_sh(straight, data_dir, manifests, straight / "log.json", None, hook)
    reference = losses_by_update(straight / "log.json")
    if rc != 0 or sorted(reference) != list(range(1, UPDATES + 1)):
        raise SystemExit(f"the uninterrupted run failed (exit {rc}): {straight / 'log.stderr'}")
    final = checkpoint.read(straight / f"Jasper_epoch{EPOCHS}_checkpoint.pt")["state_dict"]

    for i, point in enumerate(kill_points(kills, seed)):
        out = work / f"kill{i:02d}"
        rc = train_sh(out, data_dir, manifests, out / "killed.json", point, hook)
        problems = [] if rc == -9 else [f"the killed run exited {rc}, not -9 (SIGKILL)"]
        kind, n = point.split(":")
        if kind == "save" and not list(out.glob(f".Jasper_epoch{n}_checkpoint.pt.*.tmp")):
            problems.append("no half-written temp file: the kill did not land mid-save")
        corrupt = 0
        for path in out.glob("Jasper_*_checkpoint.pt"):
            try:
                checkpoint.read(path)
            except checkpoint.CheckpointError:
                corrupt += 1
        last = checkpoint.latest_loadable(out)
        resume_after = last[1]["step"] - 1 if last else 0
        rc = train_sh(out, data_dir, manifests, out / "resumed.json", None, hook)
        resumed = losses_by_update(out / "resumed.json")
        if sorted(resumed) != list(range(resume_after + 1, UPDATES + 1)):
            problems.append(f"resumed updates {sorted(resumed)}, expected {resume_after + 1}..{UPDATES}")
        off = [
            u for u, loss in resumed.items() if abs(loss - reference[u]) > 1e-5 * max(1.0, abs(reference[u]))
        ]
        if off:
            problems.append(f"losses differ from the uninterrupted run at updates {off}")
        last_complete_epoch = (int(n) - 1) // (UPDATES // EPOCHS) if kind == "update" else int(n) - 1
        if resume_after != last_complete_epoch * (UPDATES // EPOCHS):
            problems.append(
                f"resumed after update {resume_after}, not from the epoch {last_complete_epoch} checkpoint"
            )
        if list(out.glob(".*.tmp")):
            problems.append("an interrupted save's temp file was left behind")
        last_ckpt = out / f"Jasper_epoch{EPOCHS}_checkpoint.pt"
        if rc == 0 and last_ckpt.exists():
            weights = checkpoint.read(last_ckpt)["state_dict"]
            if any(not torch.allclose(weights[k], v, atol=1e-6, rtol=0) for k, v in final.items()):
                problems.append("final weights differ from the uninterrupted run's")
        survived = rc == 0 and last_ckpt.exists()
        problems += [f"{corrupt} unreadable checkpoint(s) after the kill"] if corrupt else []
        row.add(
            survived,
            bool(problems),
            corrupt,
            kill=point,
            resumed_from_update=resume_after,
            problems=problems,
        )
        status = "ok" if survived and not problems else f"FAILED {problems}"
        print(f"  kill {i + 1}/{kills} at {point}: resumed after update {resume_after}: {status}", flush=True)
    return row


FULL_DISK = """
import resource, signal, sys, torch
from jasper import checkpoint
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), int(sys.argv[2])))
try:
    checkpoint.atomic_save({"big": torch.zeros(1 << 20)}, sys.argv[1])
except checkpoint.CheckpointError as e:
    print(e)
    sys.exit(3)
"""


def soak_full_disk(work: Path) -> Row:
    """A save that hits the file size limit at several points: the old checkpoint must survive."""
    from jasper import checkpoint

    row = Row("disk full during a checkpoint save (RLIMIT_FSIZE)")
    for limit in (0, 4096, 1 << 20, 3 << 20):
        folder = work / f"disk{limit}"
        folder.mkdir(parents=True)
        path = folder / "Jasper_epoch1_checkpoint.pt"
        checkpoint.atomic_save({"state_dict": {}, "step": 7}, path)
        run = subprocess.run(
            [sys.executable, "-c", FULL_DISK, str(path), str(limit)], capture_output=True, text=True
        )
        try:
            intact = checkpoint.read(path)["step"] == 7 and list(folder.iterdir()) == [path]
        except checkpoint.CheckpointError:
            intact = False
        said = "previous checkpoint there is unchanged" in run.stdout
        row.add(run.returncode == 3 and said and "Traceback" not in run.stderr, not intact, limit=limit)
    return row


# ------------------------------------------------------------------------------------------- batch


def bad_audio(folder: Path, clip: Path) -> dict[str, Path]:
    """Write every kind of unreadable audio beside nothing else; returns name -> path."""
    audio, rate = sf.read(str(clip), dtype="float32")
    folder.mkdir(parents=True, exist_ok=True)
    files = {k: folder / k for k in ("empty.flac", "truncated.wav", "random.wav", "nan.wav", "inf.wav")}
    files["empty.flac"].write_bytes(b"")
    sf.write(str(files["truncated.wav"]), audio, rate)
    files["truncated.wav"].write_bytes(files["truncated.wav"].read_bytes()[:30])
    files["random.wav"].write_bytes(np.random.default_rng(0).bytes(4000))
    for name, value in (("nan.wav", np.nan), ("inf.wav", np.inf)):
        samples = audio[:rate].copy()
        samples[100] = value
        sf.write(str(files[name]), samples, rate, subtype="FLOAT")
    return files


def tool_outcome(row: Row, run: subprocess.CompletedProcess, bad: list[Path], lost: bool, tool: str) -> None:
    """One try per bad input: survived when the run ended with exit 3, no traceback, and the input
    named on stderr."""
    clean = run.returncode == 3 and "Traceback" not in run.stderr
    for path in bad:
        row.add(clean and str(path) in run.stderr, lost, tool=tool, input=path.name, exit=run.returncode)


def soak_batch_tools(data_dir: Path, work: Path) -> Row:
    import torch

    from jasper import config
    from jasper.lm.ngram import LMError
    from jasper.lm.tool import find_tool
    from jasper.model import Jasper

    row = Row("bad input to the batch tools (transcribe, infer, data prepare, lm build)")
    torch.manual_seed(0)
    cfg = config.load(TINY)
    ckpt = work / "tiny.pt"
    torch.save({"state_dict": Jasper.from_config(cfg).state_dict(), "config": cfg}, ckpt)
    clips = shortest_clips(data_dir, 3)
    good = [data_dir / c["audio_filepath"] for c in clips]

    folder = work / "folder"
    bad = list(bad_audio(folder, good[0]).values())
    for g in good:
        shutil.copy(g, folder / g.name)
    run = subprocess.run(
        jasper_cmd("transcribe", str(folder), "--ckpt", str(ckpt)), capture_output=True, text=True
    )
    done = {Path(line.split("\t")[0]).name for line in run.stdout.splitlines()}
    tool_outcome(row, run, bad, not {g.name for g in good} <= done, "transcribe")

    missing = work / "gone.wav"
    rows = [{"audio_filepath": str(g), "duration": 3.0, "text": "x"} for g in good]
    rows += [{"audio_filepath": str(p), "duration": 1.0, "text": "x"} for p in [*bad, missing]]
    preds = work / "preds.txt"
    args = ["infer", "--model_config", str(TINY), "--ckpt", str(ckpt), "--cpu", "-o", str(work / "infer")]
    args += ["--val_manifests", str(write_manifest(work / "m.json", rows)), "--workers", "0"]
    run = subprocess.run(jasper_cmd(*args, "--save_predictions", str(preds)), capture_output=True, text=True)
    predicted = len(preds.read_text().splitlines()) if preds.exists() else 0
    tool_outcome(row, run, [*bad, missing], predicted != len(good), "infer")

    chapter_src = next(data_dir.glob("dev-clean/*/*"))
    chapter = work / "ls" / "dev-clean" / chapter_src.parent.name / chapter_src.name
    shutil.copytree(chapter_src, chapter)
    flacs = sorted(chapter.glob("*.flac"))
    flacs[0].write_bytes(b"not a flac" * 100)
    flacs[1].write_bytes(flacs[1].read_bytes()[: flacs[1].stat().st_size // 2])
    manifest = work / "prepared.json"
    args = ["data", "prepare", "--input_dir", str(work / "ls"), "--dest_dir", str(work / "wav")]
    run = subprocess.run(
        jasper_cmd(*args, "--output_json", str(manifest), "--parallel", "2"), capture_output=True, text=True
    )
    entries = json.loads(manifest.read_text()) if manifest.exists() else []
    tool_outcome(row, run, flacs[:2], len(entries) != len(flacs) - 2, "data prepare")

    try:
        find_tool("lmplz")
    except LMError as e:
        print(f"  lm build: skipped ({e})")
        return row
    text = work / "good.txt"
    text.write_text("the cat sat on the mat\nthe dog sat on the log\n" * 20)
    binary, gone = work / "binary.txt", work / "missing.txt"
    binary.write_bytes(b"\x00\xff\xfe garbage\n" * 5 + b"a fine line\n")
    args = [
        "lm",
        "build",
        "--text",
        str(text),
        str(binary),
        str(gone),
        "--order",
        "2",
        "--out",
        str(work / "lm"),
    ]
    run = subprocess.run(jasper_cmd(*args), capture_output=True, text=True)
    tool_outcome(row, run, [binary, gone], not (work / "lm" / "lm.arpa").is_file(), "lm build")
    return row


# ------------------------------------------------------------------------------------------- serve


def soak_serving(requests: int, concurrency: int, data_dir: Path, work: Path) -> Row | None:
    import socket

    import torch

    from jasper import audio, config
    from jasper.decoding import greedy_decode
    from jasper.features import FilterbankFeatures
    from jasper.model import Jasper
    from jasper.serving.client import Client, run_requests
    from jasper.serving.repository import RepoOptions, write_repository
    from jasper.serving.server import TritonError, TritonInstall, TritonServer
    from jasper.text import Tokenizer

    try:
        TritonInstall.find()
    except TritonError as e:
        print(f"serve: skipped ({e})")
        return None

    def port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    cfg = config.load(TINY)
    torch.manual_seed(0)
    model = Jasper.from_config(cfg).eval()
    features = FilterbankFeatures(**config.section(cfg, "input_val", "filterbank_features")).eval()
    opts = RepoOptions(max_batch_size=8, max_queue_delay_us=20_000, max_duration=SERVE_MAX_DURATION)
    repo = write_repository(cfg, model, work / "repo", opts)
    clips = [audio.load(data_dir / c["audio_filepath"]) for c in shortest_clips(data_dir, 8)]
    with torch.no_grad():
        expected = []
        for clip in clips:
            feats, lens = features(torch.from_numpy(clip)[None], torch.tensor([len(clip)]))
            log_probs, out_lens = model(feats, lens)
            expected.append(greedy_decode(log_probs, out_lens, Tokenizer(cfg["labels"]))[0])
    malformed = [
        np.zeros(0, np.float32),
        np.zeros(int(SERVE_MAX_DURATION * 16000) + 1, np.float32),
        np.full(16000, np.nan, np.float32),
    ]
    batches = [
        [malformed[(i // 10) % 3]] if i % 10 == 9 else [clips[i % len(clips)]] for i in range(requests)
    ]

    server = TritonServer(repo, port(), port(), port(), log_file=work / "server.log")
    server.start()
    row = Row(f"{requests} requests from {concurrency} concurrent clients, 1 in 10 malformed")

    async def go(todo: list[list[np.ndarray]]) -> list:
        async with Client(server.http_url) as client:
            return await run_requests(client, todo, concurrency)

    try:
        asyncio.run(go(batches[:concurrency]))  # warm-up: allocator pools and shared memory grow once
        rss_start = server.rss()
        results = asyncio.run(go(batches))
        rss_end = server.rss()
        alive = server.process is not None and server.process.poll() is None
        flat = rss_end < rss_start * 1.25 + 64 * 2**20
        with_answer = 0
        for r in results:
            bad = r.index % 10 == 9
            answered = (r.error is not None) if bad else (r.texts == [expected[r.index % len(clips)]])
            with_answer += answered
        good_lost = sum(
            1 for r in results if r.index % 10 != 9 and r.texts != [expected[r.index % len(clips)]]
        )
        row.add(
            alive and flat,
            good_lost > 0,
            requests=requests,
            answered_as_expected=with_answer,
            good_requests_lost=good_lost,
            rss_start_mib=round(rss_start / 2**20, 1),
            rss_end_mib=round(rss_end / 2**20, 1),
        )
        print(
            f"  serve: {with_answer}/{requests} answered as expected, server "
            f"{'up' if alive else 'DEAD'}, RSS {rss_start / 2**20:.0f} -> {rss_end / 2**20:.0f} MiB",
            flush=True,
        )
    finally:
        server.stop()
    return row


def table(rows: list[Row]) -> str:
    lines = ["| fault | tries | survived | data lost | corrupt checkpoints |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.fault} | {r.tries} | {r.survived} | {r.data_lost} | {r.corrupt_checkpoints} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_data = (
        Path(os.environ.get("JASPER_SHARED") or REPO.parent / "shared") / "data" / "librispeech-real-mini"
    )
    parser.add_argument(
        "--kills", type=int, default=20, help="SIGKILL moments in the training soak (default 20)"
    )
    parser.add_argument("--seed", type=int, default=0, help="picks the updates to kill at (default 0)")
    parser.add_argument(
        "--requests", type=int, default=2000, help="requests in the serving soak (default 2000)"
    )
    parser.add_argument("--concurrency", type=int, default=64, help="concurrent clients (default 64)")
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=("train", "batch", "serve"),
        default=["train", "batch", "serve"],
        help="which parts to run (default: all three)",
    )
    parser.add_argument("--data_dir", type=Path, default=default_data, help="real LibriSpeech clips")
    parser.add_argument(
        "--output_dir", type=Path, default=Path("results/fault_soak"), help="soak.json goes here"
    )
    args = parser.parse_args(argv)
    if not args.data_dir.is_dir():
        parser.error(f"--data_dir {args.data_dir} does not exist")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "train" in args.parts:
            print(f"train: {args.kills} kills", flush=True)
            rows += [
                soak_training(args.kills, args.seed, args.data_dir, work / "train"),
                soak_full_disk(work),
            ]
        if "batch" in args.parts:
            print("batch tools", flush=True)
            (work / "batch").mkdir()
            rows.append(soak_batch_tools(args.data_dir, work / "batch"))
        if "serve" in args.parts:
            print("serve", flush=True)
            (work / "serve").mkdir()
            row = soak_serving(args.requests, args.concurrency, args.data_dir, work / "serve")
            rows += [row] if row else []
    print(table(rows))
    (args.output_dir / "soak.json").write_text(json.dumps([asdict(r) for r in rows], indent=1))
    failed = sum(r.tries - r.survived + r.data_lost + r.corrupt_checkpoints for r in rows)
    print(f"{failed} failures; every try's details in {args.output_dir / 'soak.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
