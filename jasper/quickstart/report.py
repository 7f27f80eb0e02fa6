"""The quickstart's report: figures recomputed from the files the real commands wrote.

Every number in `report.md` and `summary.json` is computed here from `jasper infer`'s predictions
files, the manifests and `jasper train`'s `nvlog.json`, so the report cannot disagree with them.
"""

from __future__ import annotations

import json
import math
import platform
from pathlib import Path
from typing import Any

import jiwer
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from jasper import config  # noqa: E402
from jasper.checkpoint import epoch_of  # noqa: E402
from jasper.data import load_utterances, unique_ids  # noqa: E402
from jasper.metrics import char_errors, word_errors  # noqa: E402
from jasper.text import Tokenizer  # noqa: E402


def read_predictions(path: str | Path) -> dict[str, str]:
    """`<utterance id>\\t<text>` lines (as `jasper infer --save_predictions` writes) -> {id: text}."""
    out = {}
    for line in Path(path).read_text().splitlines():
        uid, _, text = line.partition("\t")
        out[uid] = text
    return out


def references(manifests: list[str | Path], data_dir: str | Path, model_config: str | Path) -> dict[str, str]:
    """Normalised reference transcripts by utterance id, exactly as `jasper infer` scores them."""
    cfg = config.load(model_config)
    utts, _ = load_utterances(
        manifests,
        data_dir,
        Tokenizer(cfg["labels"]),
        config.section(cfg, "input_val", "audio_dataset"),
        check_files=False,
    )
    return dict(zip(unique_ids([u.id for u in utts]), (u.text for u in utts), strict=True))


def score(hyps: dict[str, str], refs: dict[str, str], ids: list[str] | None = None) -> dict[str, float | int]:
    """Corpus WER and CER (percent) over `ids` (default: every reference)."""
    ids = list(refs) if ids is None else ids
    h = [" ".join(hyps.get(i, "").split()) for i in ids]
    r = [refs[i] for i in ids]
    w, c = word_errors(h, r), char_errors(h, r)
    return {"utterances": len(ids), "words": w.units, "wer": 100 * w.rate, "cer": 100 * c.rate}


def engine_of(utterance_id: str, voices: dict[str, Any]) -> str:
    speaker = utterance_id.split("-")[0]
    voice = voices.get(speaker)
    return f"{voice['engine']} {voice['voice']}" if voice else "?"


def speaker_group(utterance_id: str, voices: dict[str, Any]) -> str:
    """The engine of an utterance's voice, with Kokoro's own voice packs apart from its blends of them."""
    voice = voices.get(utterance_id.split("-")[0])
    if not voice:
        return "?"
    if voice["engine"] == "kokoro":
        return "kokoro blend" if "*" in voice["voice"] else "kokoro pack"
    return voice["engine"]


def held_out_voices(voices: dict[str, Any]) -> str:
    """The test split's voices, named, except that an engine with many is a count of packs and blends."""
    by_engine: dict[str, list[str]] = {}
    for v in voices.values():
        if v.get("split") == "test":
            by_engine.setdefault(v["engine"], []).append(v["voice"])
    parts = []
    for engine, names in by_engine.items():
        if len(names) <= 4:
            parts += [f"{engine} {name}" for name in names]
        else:
            blends = sum("*" in name for name in names)
            parts.append(f"{engine} ({len(names) - blends} voices and {blends} blends of them)")
    return ", ".join(parts) or "none"


def highlight(hyp: str, ref: str) -> tuple[str, str]:
    """Markdown with the words that differ in bold (substitutions, insertions, deletions)."""
    if not ref.split():
        return hyp, ref
    out = jiwer.process_words(ref, hyp if hyp.split() else "<empty>")
    r_words, h_words = out.references[0], out.hypotheses[0]
    r_marked, h_marked = [], []
    for chunk in out.alignments[0]:
        rs, hs = (
            r_words[chunk.ref_start_idx : chunk.ref_end_idx],
            h_words[chunk.hyp_start_idx : chunk.hyp_end_idx],
        )
        if chunk.type == "equal":
            r_marked += rs
            h_marked += hs
        else:
            r_marked += [f"**{w}**" for w in rs]
            h_marked += [f"**{w}**" for w in hs]
    return " ".join(h_marked), " ".join(r_marked)


def training_curves(nvlog: Path) -> tuple[list[tuple[float, float]], list[tuple[float, float, float]], dict]:
    """(seconds, train loss) points, (seconds, dev WER, dev CER) points and throughput figures.

    Seconds are the records' `train_seconds`: the training time of all runs, the clock of the time
    budget and of the checkpoints. A resumed run appends to the same log, and wall time would stretch
    the curves over the hours between a Ctrl-C and the resume. Records without it (logs written
    before it was logged) count towards the throughput figures but give no curve points.

    Throughput is averaged over the logged steps (each record covers one step): audio-seconds trained
    per second, and the share of step time spent waiting for the data loader.
    """
    losses, dev = [], []
    audio = took = wait = 0.0
    steps = 0
    for line in nvlog.read_text().splitlines():
        if not line.startswith("DLLL "):
            continue
        rec = json.loads(line[5:])
        if rec.get("type") != "LOG":
            continue
        t, data = rec.get("train_seconds"), rec.get("data", {})  # no clock in logs from before it was logged
        if t is not None and data.get("train_loss") is not None:
            losses.append((t, data["train_loss"]))
        if data.get("train_audio_rate") and data.get("train_took"):
            audio += data["train_audio_rate"] * data["train_took"]
            took += data["train_took"]
            wait += data.get("train_wait") or 0.0
            steps += 1
        if t is not None and data.get("dev_wer") is not None:
            dev.append((t, data["dev_wer"], data.get("dev_cer", math.nan)))
    summary = {
        "logged_steps": steps,
        "audio_seconds_per_second": audio / took if took else math.nan,
        "loader_wait_per_step_ms": 1000 * wait / steps if steps else math.nan,
        "loader_wait_share": wait / took if took else math.nan,
    }
    return losses, dev, summary


def gemm_gflops(n: int = 2048, repeats: int = 3) -> float:
    """This machine's fp32 matrix-multiply rate, the yardstick for the training's GFLOP/s."""
    import time

    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    start = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def write_report(
    out: Path,
    args: dict[str, Any],
    results: dict[str, Any],
    synth_dir: Path,
    train_dir: Path,
    commands: list[str],
    corpus_seconds: float,
    train_wall_seconds: float,
    total_seconds: float,
    ckpt: Path | None = None,
    curve: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Write report.md, summary.json and the PNGs; return the summary.

    `curve`: earlier checkpoints' greedy predictions on the synthetic test split (`epoch`, `minutes`,
    `predictions`), scored here; the final model's figures are the last point (`final: true`).
    """
    voices = json.loads((synth_dir / "voices.json").read_text())["voices"]
    summary: dict[str, Any] = {"splits": {}, "machine": f"{platform.machine()}, {platform.processor()}"}
    examples = []
    test_refs: dict[str, str] | None = None  # the unseen-voice split's, also for the curve below
    for name, res in results.items():
        refs = references(res["manifests"], res["data_dir"], args["model_config"])
        greedy = read_predictions(res["predictions"])
        split = {"greedy": score(greedy, refs), "predictions": res["predictions"]}
        if "lm_predictions" in res:
            split["lm"] = score(read_predictions(res["lm_predictions"]), refs)
            split["lm_predictions"] = res["lm_predictions"]
        if name.startswith("synth"):
            by_engine: dict[str, list[str]] = {}
            for uid in refs:
                by_engine.setdefault(speaker_group(uid, voices), []).append(uid)
            split["by_engine"] = {e: score(greedy, refs, ids) for e, ids in sorted(by_engine.items())}
        if name == "synth-test":
            test_refs = refs
            for uid in list(refs)[:10]:
                examples.append((uid, engine_of(uid, voices), *highlight(greedy.get(uid, ""), refs[uid])))
        summary["splits"][name] = split
    losses, dev, train_summary = training_curves(train_dir / "nvlog.json")
    from jasper.model import Jasper
    from jasper.model_info import describe

    model = Jasper.from_config(config.load(args["model_config"]))
    # training costs about 3x the forward pass (forward, then gradients for inputs and weights)
    train_summary["gflops_per_s"] = (
        3 * describe(model).gflops_per_s * train_summary["audio_seconds_per_second"]
    )
    train_summary["gemm_gflops"] = gemm_gflops()
    train_summary["share_of_gemm_peak"] = train_summary["gflops_per_s"] / train_summary["gemm_gflops"]
    train_summary["parameters"] = sum(p.numel() for p in model.parameters())
    if ckpt is not None:
        from jasper.checkpoint import read

        saved = read(ckpt)
        train_summary["checkpoint"] = str(ckpt)
        train_summary["updates"] = saved.get("step", 1) - 1
        train_summary["training_minutes_all_runs"] = saved.get("train_seconds", math.nan) / 60
    summary.update(
        training=train_summary,
        corpus_seconds=corpus_seconds,
        train_wall_seconds=train_wall_seconds,
        total_seconds=total_seconds,
    )
    corpus = {s: json.loads((synth_dir / f"synth-{s}.json").read_text()) for s in ("train", "dev", "test")}
    summary["corpus"] = {
        s: {"utterances": len(v), "hours": sum(e["original_duration"] for e in v) / 3600}
        for s, v in corpus.items()
    }
    if test_refs is not None:
        earlier = sorted(curve or [], key=lambda p: p["epoch"])
        points = [
            {**p, **score(read_predictions(p["predictions"]), test_refs), "final": False} for p in earlier
        ]
        final = summary["splits"]["synth-test"]["greedy"]
        minutes = train_summary.get("training_minutes_all_runs", math.nan)
        points.append({"epoch": epoch_of(ckpt) if ckpt else None, "minutes": minutes, **final, "final": True})
        summary["curve"] = points
        if len(points) >= 2:
            plot_curve(points, dev, out / "curve.png")
    plot_curves(losses, dev, out / "training.png")
    plot_splits(summary, out / "wer.png")
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "report.md").write_text(render(summary, args, examples, commands, voices))
    return summary


def plot_curves(losses: list[tuple[float, float]], dev: list[tuple[float, float, float]], path: Path) -> None:
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    if losses:
        ax1.plot([t / 60 for t, _ in losses], [v for _, v in losses], lw=1)
    ax1.set(xlabel="minutes", ylabel="CTC loss (per utterance)", title="training loss", yscale="log")
    if dev:
        ax2.plot([t / 60 for t, _, _ in dev], [w for _, w, _ in dev], marker="o", label="WER")
        ax2.plot([t / 60 for t, _, _ in dev], [c for _, _, c in dev], marker="o", label="CER")
        ax2.legend()
    ax2.set(xlabel="minutes", ylabel="%", title="dev split (greedy)", ylim=(0, 105))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_curve(points: list[dict[str, Any]], dev: list[tuple[float, float, float]], path: Path) -> None:
    """Unseen-voice WER and CER of each evaluated checkpoint against training minutes, with the dev
    split's evaluations from the training log (dashed) for contrast: training voices vs new ones."""
    fig, ax = plt.subplots(figsize=(7, 4))
    minutes = [p["minutes"] for p in points]
    ax.plot(minutes, [p["wer"] for p in points], marker="o", color="C0", label="test WER (unseen voices)")
    ax.plot(minutes, [p["cer"] for p in points], marker="o", color="C1", label="test CER (unseen voices)")
    if dev:
        t = [s / 60 for s, _, _ in dev]
        ax.plot(t, [w for _, w, _ in dev], ls="--", color="C0", alpha=0.6, label="dev WER (training voices)")
        ax.plot(t, [c for _, _, c in dev], ls="--", color="C1", alpha=0.6, label="dev CER (training voices)")
    ax.set(xlabel="training minutes", ylabel="%", title="error rates against training time (greedy)")
    ax.set(ylim=(0, 105), xlim=(0, None))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_splits(summary: dict[str, Any], path: Path) -> None:
    names = list(summary["splits"])
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.2
    bars = [("greedy", "wer", "WER greedy"), ("greedy", "cer", "CER greedy"), ("lm", "wer", "WER + LM")]
    for i, (dec, metric, label) in enumerate(bars):
        vals = [summary["splits"][n].get(dec, {}).get(metric, math.nan) for n in names]
        ax.bar([x + (i - 1) * width for x in range(len(names))], vals, width, label=label)
    ax.set_xticks(range(len(names)), names)
    ax.set(ylabel="%", title="error rates by split", ylim=(0, 110))
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


TRAINING_FIGURES = (
    ("parameters", "parameters", "{:,}"),
    ("training_minutes_all_runs", "training time, all runs (minutes)", "{:.1f}"),
    ("updates", "optimizer updates", "{:,}"),
    ("audio_seconds_per_second", "audio-seconds trained per second", "{:.0f}"),
    ("gflops_per_s", "model GFLOP/s in training (3 x forward FLOPs)", "{:.0f}"),
    ("gemm_gflops", "this machine's fp32 GEMM GFLOP/s", "{:.0f}"),
    ("share_of_gemm_peak", "share of the fp32 GEMM rate (bf16 training can exceed it)", "{:.0%}"),
    ("loader_wait_per_step_ms", "data loader wait per step (ms)", "{:.1f}"),
    ("loader_wait_share", "share of step time waiting for data", "{:.1%}"),
    ("checkpoint", "checkpoint evaluated", "`{}`"),
)


def _pct(value: float) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1f}%"


def render(
    summary: dict[str, Any],
    args: dict[str, Any],
    examples: list[tuple],
    commands: list[str],
    voices: dict[str, Any],
) -> str:
    s = summary
    train = s.get("training", {})
    decoding = "greedy decoding" + ("" if args["no_lm"] else " and with a word 4-gram LM")
    lines = [
        "# jasper quickstart report",
        "",
        f"Model `{Path(args['model_config']).name}` trained for {args['minutes']:g} minutes on a "
        f"synthetic TTS corpus, evaluated with {decoding}. "
        f"This invocation: {s['total_seconds'] / 60:.1f} min (corpus {s['corpus_seconds'] / 60:.1f} min, "
        f"training {s['train_wall_seconds'] / 60:.1f} min); training time over all runs: "
        f"{train.get('training_minutes_all_runs', math.nan):.1f} min.",
        "",
        "## Results",
        "",
        "| split | utterances | words | WER greedy | CER greedy | WER + LM | CER + LM |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, split in s["splits"].items():
        g, lm = split["greedy"], split.get("lm", {})
        lines.append(
            f"| {name} | {g['utterances']} | {g['words']} | {_pct(g['wer'])} | {_pct(g['cer'])} | "
            f"{_pct(lm.get('wer'))} | {_pct(lm.get('cer'))} |"
        )
    lines += [
        "",
        "`synth-test` has sentences and voices never seen in training; `librispeech-real` is 36 real "
        "LibriSpeech clips (read human speech): a model trained for minutes on synthetic voices is expected "
        "to do badly there, and does.",
        "",
        "![error rates](wer.png)",
        "",
        "### By TTS engine (greedy)",
        "",
        "Kokoro's voices are counted apart: its own voice packs, and blends of them (new speakers).",
        "",
        "| split | engine | utterances | WER | CER |",
        "|---|---|---:|---:|---:|",
    ]
    for name, split in s["splits"].items():
        for engine, sc in split.get("by_engine", {}).items():
            lines.append(
                f"| {name} | {engine} | {sc['utterances']} | {_pct(sc['wer'])} | {_pct(sc['cer'])} |"
            )
    lines += ["", f"Voices held out for the test split: {held_out_voices(voices)}.", ""]
    if len(s.get("curve", [])) >= 2:
        lines += [
            "### Error rates against training time (synth-test, greedy)",
            "",
            "Every kept checkpoint of this run on the unseen voices (solid), and the training log's dev",
            "evaluations on the training voices (dashed). The learning rate decays towards the end of the",
            "whole budget, so an early point is worse than what a run given that shorter budget would reach.",
            "",
            "![error rates against training minutes](curve.png)",
            "",
            "| checkpoint | training minutes | WER | CER |",
            "|---|---:|---:|---:|",
        ]
        for p in s["curve"]:
            label = f"epoch {p['epoch']}" + (" (final)" if p["final"] else "")
            minutes = "-" if math.isnan(p["minutes"]) else f"{p['minutes']:.1f}"
            lines.append(f"| {label} | {minutes} | {_pct(p['wer'])} | {_pct(p['cer'])} |")
        lines.append("")
    lines += [
        "## Training",
        "",
        "![training curves](training.png)",
        "",
        "| figure | value |",
        "|---|---|",
    ]
    for key, label, fmt in TRAINING_FIGURES:
        if key in train:
            lines.append(f"| {label} | {fmt.format(train[key])} |")
    corpus = s["corpus"]
    lines += [
        "",
        "Corpus: "
        + ", ".join(f"{k} {v['utterances']} utterances ({v['hours']:.2f} h)" for k, v in corpus.items()),
        "",
        "## Examples (synthetic test split, greedy; differences in bold)",
        "",
    ]
    for uid, engine, hyp, ref in examples:
        lines += [f"- `{uid}` ({engine})", f"  - reference: {ref}", f"  - hypothesis: {hyp or '(empty)'}"]
    lines += [
        "",
        "## Reproduce, continue, use",
        "",
        "The commands this run executed (also in `commands.sh`):",
        "",
        "```bash",
        *commands,
        "```",
        "",
        "Continue training the same model for longer (the time budget counts across runs):",
        "",
        "```bash",
        f"bash scripts/quickstart.sh --minutes {2 * args['minutes']:g}",
        "```",
        "",
        "Transcribe your own files with the trained model (`--pad_leading 0`, as in the evaluation above; "
        "transcribe's default, 16 zero frames, is the reference's):",
        "",
        "```bash",
        f".venv/bin/jasper transcribe --model_config {args['model_config']} "
        f"--ckpt {train.get('checkpoint', 'CHECKPOINT')} --pad_leading 0 my_recording.wav",
        "```",
        "",
    ]
    return "\n".join(lines)
