"""Hotwords: `word[:weight]` parsing, per-word weights in beam search, and the CLI's one-line errors."""

from __future__ import annotations

import numpy as np
import pytest

from jasper.cli import main
from jasper.lm.beam import parse_hotwords

LABELS = tuple(" abcdefghijklmnopqrstuvwxyz'")
pytest.importorskip("pyctcdecode", reason="beam search needs pyctcdecode: bash scripts/setup_kenlm.sh")


def frames(*spelled: tuple[str, float]) -> np.ndarray:
    """Log-probs spelling each (character, probability) on two frames, the runner-up letter 'k' or
    'c' taking the rest, with a blank frame between characters."""
    blank = len(LABELS)
    rows = []
    for ch, p in spelled:
        other = "k" if ch == "c" else "c"
        row = np.full(len(LABELS) + 1, 1e-4)
        row[LABELS.index(ch)], row[LABELS.index(other)] = p, 1 - p
        rows += [row, row]
        gap = np.full(len(LABELS) + 1, 1e-4)
        gap[blank] = 1.0
        rows.append(gap)
    out = np.log(np.array(rows) / np.array(rows).sum(axis=1, keepdims=True))
    return out.astype(np.float32)


def test_parse_hotwords_weights_and_errors() -> None:
    assert parse_hotwords(["kat:12.5", "dog", " "], LABELS, 7.0) == {"kat": 12.5, "dog": 7.0}
    with pytest.raises(ValueError, match="'naïve' has characters outside the model's labels: 'ï'"):
        parse_hotwords(["naïve"], LABELS)
    with pytest.raises(ValueError, match="must be a number"):
        parse_hotwords(["kat:lots"], LABELS)


def test_a_weighted_hotword_wins_where_the_acoustics_hesitate() -> None:
    from jasper.lm.beam import BeamSearchDecoder

    lp = frames(("c", 0.6), ("a", 0.99), ("t", 0.99), (" ", 0.99), ("d", 0.99), ("o", 0.99), ("g", 0.99))
    with BeamSearchDecoder(LABELS) as plain:
        assert plain.decode(lp) == "cat dog"
    with BeamSearchDecoder(LABELS, hotwords={"kat": 8.0, "dog": 1.0}) as weighted:
        assert weighted.decode(lp) == "kat dog"
    with BeamSearchDecoder(LABELS, hotwords={"kat": 0.01, "dog": 1.0}) as weak:
        assert weak.decode(lp) == "cat dog"
    with BeamSearchDecoder(LABELS, hotwords=["kat"], hotword_weight=8.0) as uniform:
        assert uniform.decode_batch([lp, lp]) == ["kat dog", "kat dog"]


def test_cli_refuses_a_hotword_outside_the_labels_in_one_line(
    tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    from test_transcribe import write_checkpoint

    ckpt = write_checkpoint(tmp_path / "t.pt")
    wav = tmp_path / "a.wav"
    import soundfile as sf

    sf.write(str(wav), np.zeros(16000, np.float32), 16000)
    assert main(["transcribe", str(wav), "--ckpt", str(ckpt), "--hotwords", "fine naïve:3"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert err == ["jasper transcribe: error: hotword 'naïve' has characters outside the model's labels: 'ï'"]
    assert main(["transcribe", str(wav), "--ckpt", str(ckpt), "--hotwords", "fine:3"]) == 0  # silence: ""


def test_python_api_takes_hotwords(tmp_path) -> None:
    import soundfile as sf
    from test_transcribe import write_checkpoint

    from jasper.inference.pipeline import load

    wav = tmp_path / "noise.wav"
    sf.write(str(wav), np.random.default_rng(0).normal(0, 0.1, 32000).astype(np.float32), 16000)
    pipe = load(str(write_checkpoint(tmp_path / "t.pt")))
    [plain] = pipe.transcribe([wav], hotwords={"zzz": 0.0})
    [boosted] = pipe.transcribe([wav], hotwords={"jj": 50.0})
    assert boosted.text.split().count("jj") > plain.text.split().count("jj")
