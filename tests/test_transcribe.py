"""`jasper transcribe` and its Python API: formats, folders, long recordings, word timings, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jiwer
import numpy as np
import pytest
import soundfile as sf
import soxr
import torch
from conftest import require_shared

from jasper import audio, config
from jasper.cli import main
from jasper.features import FilterbankFeatures
from jasper.inference.pipeline import load, log_mel, log_probs, transcribe, word_timings
from jasper.model import Jasper
from jasper.text import Tokenizer

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.yaml"
ENV = os.environ | {"PYTHONPATH": str(REPO)}


def write_checkpoint(path: Path, with_config: bool = True) -> Path:
    """Random tiny weights; the space label copies a frequent label's row so transcripts have words."""
    torch.manual_seed(0)
    cfg = config.load(TINY)
    state = Jasper.from_config(cfg).state_dict()
    weight, bias = state["decoder.layers.0.weight"], state["decoder.layers.0.bias"]
    weight[0], bias[0] = weight[16], bias[16] + 0.1
    torch.save(
        {"state_dict": state, "ema_state_dict": state} | ({"config": cfg} if with_config else {}), path
    )
    return path


@pytest.fixture(scope="module")
def mini(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = require_shared("data", "librispeech-real-mini")
    tmp = tmp_path_factory.mktemp("transcribe")
    return {
        "root": root,
        "tmp": tmp,
        "flac": sorted(root.rglob("*.flac")),
        "ckpt": write_checkpoint(tmp / "t.pt"),
    }


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jasper.cli", "transcribe", *args], capture_output=True, text=True, env=ENV
    )


def test_missing_checkpoint_says_how_to_get_one(mini: dict) -> None:
    out = cli(str(mini["flac"][0]))
    assert out.returncode == 2
    assert "--model" in out.stderr and "scripts/train.sh" in out.stderr and "jasper models" in out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""


def test_checkpoint_without_config_needs_model_config(mini: dict, capsys: pytest.CaptureFixture[str]) -> None:
    bare = write_checkpoint(mini["tmp"] / "bare.pt", with_config=False)
    assert main(["transcribe", str(mini["flac"][0]), "--ckpt", str(bare)]) == 2
    assert "--model_config" in capsys.readouterr().err
    assert main(["transcribe", str(mini["flac"][0]), "--ckpt", str(bare), "--model_config", str(TINY)]) == 0
    path, text = capsys.readouterr().out.rstrip("\n").split("\t")
    assert path == str(mini["flac"][0]) and len(text.split()) > 3


def test_flac_and_44k_stereo_wav_agree(
    mini: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flac = mini["flac"][0]
    x = audio.load(flac)
    y = soxr.resample(x, 16000, 44100)
    wav = tmp_path / "stereo44k.wav"
    sf.write(str(wav), np.stack([y, 0.5 * y], axis=1), 44100, subtype="FLOAT")
    assert sf.info(str(wav)).channels == 2
    assert main(["transcribe", str(flac), str(wav), "--ckpt", str(mini["ckpt"]), "--format", "json"]) == 0
    a, b = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert a["path"] == str(flac) and b["path"] == str(wav)
    assert abs(a["duration"] - b["duration"]) < 1e-3
    # Read back at 16 kHz mono, the WAV is the FLAC at 0.75 gain, up to two resamplings' error ...
    back = audio.load(wav)
    assert back.shape == x.shape
    noise = back - 0.75 * x
    assert 10 * np.log10(np.sum((0.75 * x) ** 2) / np.sum(noise**2)) > 40
    # ... which per-utterance normalisation cancels; random weights magnify what is left a little.
    assert jiwer.cer(a["text"], b["text"]) < 0.25


def test_directory_is_searched_recursively(mini: dict, tmp_path: Path) -> None:
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    flac = mini["flac"][:2]
    (src / "one.flac").write_bytes(flac[0].read_bytes())
    sf.write(str(src / "sub" / "two.wav"), audio.load(flac[1]), 16000)
    (src / "notes.txt").write_text("not audio")
    out_dir = tmp_path / "out"
    assert main(["transcribe", str(src), "--ckpt", str(mini["ckpt"]), "--output_dir", str(out_dir)]) == 0
    assert sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*.txt")) == [
        "one.txt",
        "sub/two.txt",
    ]
    assert (
        main(
            [
                "transcribe",
                str(src),
                "--ckpt",
                str(mini["ckpt"]),
                "--output_dir",
                str(out_dir),
                "--format",
                "json",
            ]
        )
        == 0
    )
    result = json.loads((out_dir / "sub" / "two.json").read_text())
    words = result["words"]
    assert [w["word"] for w in words] == result["text"].split()
    times = [t for w in words for t in (w["start"], w["end"])]
    assert times == sorted(times) and 0 <= times[0] and times[-1] <= result["duration"]
    assert all(w["start"] <= w["end"] for w in words)  # equal only when clipped to the recording


def test_python_api_matches_infer_on_untrimmed_audio(mini: dict, tmp_path: Path) -> None:
    """Whole-file features, computed here in segments, are what `jasper infer` computes per utterance."""
    pipe = load(mini["ckpt"], device="cpu")
    files = mini["flac"][:4]
    results = pipe.transcribe(files)
    filelist = tmp_path / "files.txt"
    filelist.write_text("".join(f"{f}\n" for f in files))
    args = ["infer", "--model_config", str(TINY), "--ckpt", str(mini["ckpt"]), "--cpu", "-o", str(tmp_path)]
    assert (
        main([*args, "--transcribe_filelist", str(filelist), "--save_predictions", str(tmp_path / "p.txt")])
        == 0
    )
    infer_texts = [line.split("\t", 1)[1] for line in (tmp_path / "p.txt").read_text().splitlines()]
    assert [r.text for r in results] == infer_texts
    # and the batch path of `jasper infer` (FilterbankFeatures on the padded batch) agrees too
    features = pipe.features
    for f, r in zip(files, results, strict=True):
        x = torch.from_numpy(audio.load(f))
        feats, lens = features(x[None], torch.tensor([x.numel()]))
        lp, out_lens = pipe.model(torch.nn.functional.pad(feats, (16, 0)), lens + 16)
        ids = lp[0, : out_lens[0]].argmax(-1)
        mine = log_probs(x.numpy(), pipe.model, features)
        assert mine.shape[0] == int(out_lens[0])
        assert (mine.argmax(-1) == ids).float().mean() > 0.99
        assert r.duration == pytest.approx(x.numel() / 16000)


def test_log_mel_segments_are_exact(mini: dict) -> None:
    cfg = config.load(TINY)
    features = FilterbankFeatures(
        **config.section(cfg, "input_val", "filterbank_features") | {"normalize": "none"}
    )
    features.eval()
    x = torch.from_numpy(audio.load(mini["flac"][0]))[: 16000 * 5 + 77]
    whole, lens = features(x[None], torch.tensor([x.numel()]))
    for segment in (37, 100, 10_000):
        assert torch.equal(log_mel(x, features, segment_frames=segment), whole[0, :, : lens[0]])


@pytest.mark.slow
def test_long_recording_chunked_equals_unchunked(mini: dict) -> None:
    pipe = load(mini["ckpt"], device="cpu")
    x = np.concatenate([audio.load(f) for f in mini["flac"][:25]])  # about 3 minutes
    assert x.size / 16000 > 150
    whole = log_probs(x, pipe.model, pipe.features, chunk_seconds=0)
    chunked = log_probs(x, pipe.model, pipe.features, chunk_seconds=30, chunk_overlap=4)
    assert chunked.shape == whole.shape
    # The tiny model's receptive field (155 frames) fits in half the overlap: equal up to rounding.
    assert torch.allclose(chunked, whole, atol=1e-4)
    top2 = whole.topk(2, dim=-1).values
    decided = (top2[:, 0] - top2[:, 1]) > 1e-3
    assert torch.equal(chunked.argmax(-1)[decided], whole.argmax(-1)[decided])


@pytest.mark.slow
def test_ten_minutes_stay_under_2_gb(mini: dict, tmp_path: Path) -> None:
    x = np.concatenate([audio.load(f) for f in mini["flac"]])
    x = np.tile(x, int(np.ceil(600 * 16000 / x.size)))[: 600 * 16000]
    long_file = tmp_path / "ten_minutes.flac"
    sf.write(str(long_file), x, 16000)
    probe = (
        "import resource, subprocess, sys; "
        "r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
        "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, r.stdout.count(chr(9)))"
    )
    cmd = [
        sys.executable,
        "-m",
        "jasper.cli",
        "transcribe",
        str(long_file),
        "--ckpt",
        str(mini["ckpt"]),
        "--device",
        "cpu",
    ]
    out = subprocess.run(
        [sys.executable, "-c", probe, *cmd], capture_output=True, text=True, env=ENV, check=True
    )
    rc, max_rss_kb, lines = map(int, out.stdout.split())
    assert rc == 0 and lines == 1
    assert max_rss_kb < 2 * 1024 * 1024, f"peak RSS {max_rss_kb / 1024:.0f} MiB"


def test_word_timings_from_alignment() -> None:
    tok = Tokenizer(config.load(TINY)["labels"])
    b = tok.blank
    #      0  1  2  3  4  5  6  7  8  9  10
    ids = [b, 8, 8, 9, b, 0, 0, b, 1, b, b]  # "hi a"
    words = word_timings(ids, tok, frame_seconds=0.02)
    assert [(w.word, round(w.start, 6), round(w.end, 6)) for w in words] == [
        ("hi", 0.02, 0.08),
        ("a", 0.16, 0.18),
    ]
    shifted = word_timings(ids, tok, frame_seconds=0.02, offset=0.05, duration=0.1)
    assert [(w.word, round(w.start, 6), round(w.end, 6)) for w in shifted] == [
        ("hi", 0.0, 0.03),
        ("a", 0.1, 0.1),
    ]
    assert word_timings([b, 0, b], tok, 0.02) == []


def test_transcribe_function_signature(mini: dict) -> None:
    pipe = load(mini["ckpt"], device="cpu")
    path = mini["flac"][1]  # 7.9 s: three 4 s windows
    [result] = transcribe([path], pipe.model, pipe.features, pipe.tokenizer, chunk_seconds=4, chunk_overlap=2)
    [unchunked] = transcribe([path], pipe.model, pipe.features, pipe.tokenizer, chunk_seconds=0)
    assert result.path == path and result.words
    # 1 s of context on each side of a seam exceeds half the tiny model's receptive field (0.78 s).
    assert result.text == unchunked.text
    assert [(w.word, w.start, w.end) for w in result.words] == [
        (w.word, w.start, w.end) for w in unchunked.words
    ]
    confidences = [w.confidence for w in unchunked.words]
    assert [w.confidence for w in result.words] == pytest.approx(confidences, rel=1e-4)  # float sums differ


def test_lm_beam_search_decoding(mini: dict, tmp_path: Path) -> None:
    """`--lm` decodes with beam search; every word then comes from the LM's vocabulary or is an
    unknown word the acoustic evidence forced (the random test model forces many)."""
    from jasper.lm.ngram import LMError
    from jasper.lm.tool import build_lm, find_tool

    try:
        find_tool("lmplz")
    except LMError as e:
        pytest.skip(str(e))
    text = tmp_path / "lm.txt"
    text.write_text("the cat sat on the mat\nthe dog sat on the log\n" * 5)
    build_lm([text], tmp_path / "lm", 2, memory="100M")
    out = cli(
        "--ckpt",
        str(mini["ckpt"]),
        "--lm",
        str(tmp_path / "lm"),
        "--beam_width",
        "8",
        "--format",
        "json",
        str(mini["flac"][0]),
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.splitlines()[0])
    assert result["text"] == " ".join(result["text"].split())
    assert all(w["word"] in result["text"].split() for w in result["words"])


def test_bf16_weights_stay_close_to_fp32(mini: dict) -> None:
    """--precision bf16 casts the weights once; its log-probs stay within 0.1 nats of fp32's on a real
    clip (0.013 measured; bf16 keeps 8 bits of mantissa, the log-softmax runs in float32), and the
    argmax of at least 95% of the frames is fp32's."""
    clip = audio.load(mini["flac"][0])
    ref = load(mini["ckpt"], device="cpu")
    fp32 = log_probs(clip, ref.model, ref.features)
    pipe = load(mini["ckpt"], device="cpu", precision="bf16")
    assert next(pipe.model.parameters()).dtype == torch.bfloat16
    bf16 = log_probs(clip, pipe.model, pipe.features)
    assert bf16.dtype == fp32.dtype == torch.float32 and bf16.shape == fp32.shape
    print(f"bf16 vs fp32: max |log-prob difference| {(bf16 - fp32).abs().max():.3f}")
    assert (bf16 - fp32).abs().max() < 0.1
    assert (bf16.argmax(-1) == fp32.argmax(-1)).float().mean() > 0.95


def test_precision_flag_runs_bf16_and_refuses_fp16_on_cpu(mini: dict) -> None:
    ok = cli(str(mini["flac"][0]), "--ckpt", str(mini["ckpt"]), "--precision", "bf16", "--device", "cpu")
    assert ok.returncode == 0 and ok.stdout.startswith(str(mini["flac"][0])), ok.stderr
    refused = cli(str(mini["flac"][0]), "--ckpt", str(mini["ckpt"]), "--precision", "fp16", "--device", "cpu")
    assert refused.returncode == 2 and "fp16 needs a CUDA device" in refused.stderr
    assert "Traceback" not in refused.stderr
