"""`jasper infer` and scripts/inference.sh on the real mini LibriSpeech set, with a random tiny model.

The model's decoder is nudged so that random weights still emit spaces (several words per
hypothesis), which makes the WER checks count substitutions, insertions and deletions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jiwer
import numpy as np
import pytest
import torch
from conftest import mini_manifest, require_shared

from jasper import config
from jasper.cli import main
from jasper.data import AudioDataset, load_utterances, unique_ids
from jasper.features import FilterbankFeatures
from jasper.inference.infer import BatchShardSampler, save_logits
from jasper.model import Jasper
from jasper.text import Tokenizer, normalize

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.yaml"
# One thread per process, so one process and two torchrun processes do bit-identical arithmetic.
ENV = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def write_checkpoint(path: Path, seed: int = 0) -> Path:
    """Random tiny weights whose space label copies a frequent label's row, so hypotheses have words."""
    torch.manual_seed(seed)
    cfg = config.load(TINY)
    state = Jasper.from_config(cfg).state_dict()
    weight, bias = state["decoder.layers.0.weight"], state["decoder.layers.0.bias"]
    weight[0], bias[0] = weight[16], bias[16] + 0.1
    torch.save({"state_dict": state, "ema_state_dict": state, "config": cfg}, path)
    return path


@pytest.fixture(scope="module")
def mini(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = require_shared("data", "librispeech-real-mini")
    tmp = tmp_path_factory.mktemp("infer")
    entries = mini_manifest(root, tmp / "mini.json")
    mini_manifest(root, tmp / "small.json", limit=6)
    return {"root": root, "tmp": tmp, "entries": entries, "ckpt": write_checkpoint(tmp / "tiny.pt")}


def run_script(script: str, env: dict, *args: str) -> subprocess.CompletedProcess:
    out = subprocess.run(
        ["bash", str(REPO / "scripts" / script), *args], env=ENV | env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out


def script_env(mini: dict, out_dir: Path, **extra: str) -> dict:
    return {
        "DATA_DIR": str(mini["root"]),
        "MODEL_CONFIG": str(TINY),
        "OUTPUT_DIR": str(out_dir),
        "CHECKPOINT": str(mini["ckpt"]),
        "MANIFESTS": str(mini["tmp"] / "mini.json"),
        "BATCH_SIZE": "8",
        "PREDICTION_FILE": str(out_dir / "pred.txt"),
        "LOG_FILE": str(out_dir / "log.json"),
        **extra,
    }


@pytest.fixture(scope="module")
def one_process(mini: dict) -> Path:
    """scripts/inference.sh once, in one process, saving predictions and .npz logits."""
    out_dir = mini["tmp"] / "one"
    run_script(
        "inference.sh", script_env(mini, out_dir, LOGITS_FILE=str(out_dir / "logits.npz")), "--workers", "0"
    )
    return out_dir


def read_predictions(path: Path) -> list[tuple[str, str]]:
    return [tuple(line.split("\t", 1)) for line in path.read_text().splitlines()]


def logged(path: Path, event: str) -> dict:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return next(r for r in records if r["event"] == event)


def test_script_predictions_and_wer_match_jiwer(mini: dict, one_process: Path) -> None:
    preds = read_predictions(one_process / "pred.txt")
    ids = [Path(e["audio_filepath"]).stem for e in mini["entries"]]
    assert [i for i, _ in preds] == ids  # one line per utterance, manifest order
    labels = config.load(TINY)["labels"]
    refs = [normalize(e["text"], labels) for e in mini["entries"]]
    hyps = [h for _, h in preds]
    assert sum(len(h.split()) > 3 for h in hyps) > 30  # the test model really emits words
    result = logged(one_process / "log.json", "eval")
    assert result["utterances"] == 36
    assert result["eval_wer"] == pytest.approx(100 * jiwer.wer(refs, hyps), abs=1e-9)
    assert result["eval_cer"] == pytest.approx(100 * jiwer.cer(refs, hyps), abs=1e-9)


def test_logits_reload_with_numpy_and_torch(mini: dict, one_process: Path) -> None:
    with np.load(one_process / "logits.npz") as z:
        ids, lengths = list(z["_ids"]), z["_lengths"]
        arrays = {i: z[i] for i in ids}
    assert ids == [Path(e["audio_filepath"]).stem for e in mini["entries"]]
    as_torch = {i: torch.from_numpy(a) for i, a in arrays.items()}
    # Expected output lengths: each utterance alone through features (+16 leading frames) and the model.
    cfg = config.load(TINY)
    tok = Tokenizer(cfg["labels"])
    ds_cfg = config.section(cfg, "input_val", "audio_dataset")
    utts, _ = load_utterances([mini["tmp"] / "mini.json"], mini["root"], tok, ds_cfg)
    dataset = AudioDataset(utts, ds_cfg)
    features = FilterbankFeatures(**config.section(cfg, "input_val", "filterbank_features")).eval()
    model = Jasper.from_config(cfg).eval()
    for k in range(0, len(ids), 5):  # a sample keeps the test fast; trimming silence dominates
        i, n = ids[k], lengths[k]
        audio, _, _ = dataset[k]
        feats, lens = features(audio[None], torch.tensor([audio.shape[0]]))
        _, out_lens = model(torch.nn.functional.pad(feats, (16, 0)), lens + 16)
        assert arrays[i].shape == (int(out_lens[0]), 29) == tuple(as_torch[i].shape)
        assert n == out_lens[0]
        assert np.allclose(np.exp(arrays[i]).sum(-1), 1, atol=1e-4)  # log-probabilities


@pytest.mark.slow
def test_two_processes_give_the_same_wer_and_files(mini: dict, one_process: Path) -> None:
    out_dir = mini["tmp"] / "two"
    env = script_env(mini, out_dir, NUM_GPUS="2", CPU="true", LOGITS_FILE=str(out_dir / "logits.npz"))
    run_script("inference.sh", env, "--workers", "0")
    assert (out_dir / "pred.txt").read_bytes() == (one_process / "pred.txt").read_bytes()
    one, two = logged(one_process / "log.json", "eval"), logged(out_dir / "log.json", "eval")
    assert two["eval_wer"] == one["eval_wer"] and two["utterances"] == 36
    assert logged(out_dir / "log.json", "args")["world_size"] == 2
    with np.load(one_process / "logits.npz") as a, np.load(out_dir / "logits.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        assert all(np.array_equal(a[k], b[k]) for k in a.files)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_torchscript_and_export(mini: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = [
        "infer",
        "--model_config", str(TINY),
        "--dataset_dir", str(mini["root"]),
        "--val_manifests", str(mini["tmp"] / "small.json"),
        "--ckpt", str(mini["ckpt"]),
        "--batch_size", "4",
        "--workers", "0",
        "-o", str(tmp_path),
    ]  # fmt: skip
    assert main([*base, "--save_predictions", str(tmp_path / "eager.txt")]) == 0
    assert (
        main([*base, "--torchscript", "--torchscript_export", "--save_predictions", str(tmp_path / "ts.txt")])
        == 0
    )
    assert (tmp_path / "ts.txt").read_text() == (tmp_path / "eager.txt").read_text()
    exported = {p.name for p in tmp_path.glob("tiny_fp32_*.pt")}
    assert exported == {"tiny_fp32_feat.pt", "tiny_fp32_acoustic.pt", "tiny_fp32_decoder.pt"}
    # The exported pieces run other shapes than they were traced with, and agree with eager code.
    cfg = config.load(TINY)
    features = FilterbankFeatures(**config.section(cfg, "input_val", "filterbank_features")).eval()
    model = Jasper.from_config(cfg).eval()
    model.load_state_dict(torch.load(mini["ckpt"], weights_only=True)["state_dict"])
    feat_ts, acoustic_ts, decoder_ts = (
        torch.jit.load(str(tmp_path / f"tiny_fp32_{n}.pt")) for n in ("feat", "acoustic", "decoder")
    )
    audio, audio_lens = torch.randn(3, 41000), torch.tensor([41000, 30000, 12345], dtype=torch.int32)
    f_eager, l_eager = features(audio, audio_lens)
    f_ts, l_ts = feat_ts(audio, audio_lens)
    assert torch.allclose(f_eager, f_ts, atol=1e-5) and torch.equal(l_eager, l_ts)
    lp_eager, ol_eager = model(f_eager, l_eager)
    lp_ts, ol_ts = acoustic_ts(f_eager, l_eager)
    assert torch.allclose(lp_eager, lp_ts, atol=1e-5) and torch.equal(ol_eager, ol_ts)
    ids = decoder_ts(lp_ts, ol_ts)
    assert ids.dtype == torch.int32 and (ids[2, int(ol_ts[2]) :] == 28).all()


def test_benchmark_mode_and_file_modes(
    mini: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log_file = tmp_path / "bench.json"
    args = [
        "infer",
        "--model_config", str(TINY),
        "--dataset_dir", str(mini["root"]),
        "--val_manifests", str(mini["tmp"] / "small.json"),
        "--batch_size", "2",
        "--steps", "5",
        "--warmup_steps", "2",
        "--workers", "0",
        "--log_file", str(log_file),
    ]  # fmt: skip
    assert main(args) == 0
    latency = logged(log_file, "latency")
    assert latency["latency_samples"] == 5
    assert latency["dnn_latency_0_9"] <= latency["dnn_latency_0_99"]
    flac = sorted(mini["root"].rglob("*.flac"))[:2]
    filelist = tmp_path / "files.txt"
    filelist.write_text("".join(f"{f}\n" for f in flac))
    common = ["infer", "--model_config", str(TINY), "--ckpt", str(mini["ckpt"]), "--cpu", "-o", str(tmp_path)]
    capsys.readouterr()
    assert main([*common, "--transcribe_wav", str(flac[0])]) == 0
    assert capsys.readouterr().out.startswith("Prediction   1: ")
    assert (
        main([*common, "--transcribe_filelist", str(filelist), "--save_predictions", str(tmp_path / "f.txt")])
        == 0
    )
    lines = (tmp_path / "f.txt").read_text().splitlines()
    assert [line.split("\t")[0] for line in lines] == [f.stem for f in flac]


def test_nothing_to_do_is_a_clear_error() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "jasper.cli", "infer", "--model_config", str(TINY), "--cpu"],
        capture_output=True,
        text=True,
        env=ENV,
    )
    assert out.returncode == 2 and "--val_manifests" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("world", [1, 2, 3, 5])
def test_batch_shard_sampler_deals_the_single_process_batches(world: int) -> None:
    durations = np.random.default_rng(world).uniform(1, 20, size=37)
    single = list(BatchShardSampler(durations, 4))
    shards = [list(BatchShardSampler(durations, 4, world, rank)) for rank in range(world)]
    dealt = [b for shard in shards for b in shard]
    assert sorted(map(tuple, dealt)) == sorted(map(tuple, single))
    assert sorted(i for b in dealt for i in b) == list(range(37))
    full = [b for rank in range(world) for b in BatchShardSampler(durations, 4, world, rank, drop_last=True)]
    assert all(len(b) == 4 for b in full) and len(full) == 9


def test_save_logits_variable_lengths(tmp_path: Path) -> None:
    ids = unique_ids(["a", "b", "a"])
    assert ids == ["a", "b", "a#2"]
    logits = [np.random.rand(n, 29).astype(np.float32) for n in (3, 17, 1)]
    save_logits(tmp_path / "l.npz", ["a", "b", "a"], logits)
    save_logits(tmp_path / "l.pt", ["a", "b", "a"], logits)
    with np.load(tmp_path / "l.npz") as z:
        assert list(z["_ids"]) == ids and list(z["_lengths"]) == [3, 17, 1]
        assert all(np.array_equal(z[i], x) for i, x in zip(ids, logits, strict=True))
    t = torch.load(tmp_path / "l.pt", weights_only=True)
    assert t["ids"] == ids and t["lengths"].tolist() == [3, 17, 1]
    assert all(np.array_equal(t["logits"][i].numpy(), x) for i, x in zip(ids, logits, strict=True))


def test_beam_decoder_without_lm_at_width_one_equals_greedy(mini: dict, one_process: Path) -> None:
    """DECODER=beam reaches `jasper infer --decoder beam`; beam 1 without an LM is greedy decoding."""
    pytest.importorskip("pyctcdecode", reason="the LM tools are not installed (bash scripts/setup_kenlm.sh)")
    out_dir = mini["tmp"] / "beam"
    run_script("inference.sh", script_env(mini, out_dir, DECODER="beam", BEAM_WIDTH="1"), "--workers", "0")
    greedy = [(i, " ".join(h.split())) for i, h in read_predictions(one_process / "pred.txt")]
    assert read_predictions(out_dir / "pred.txt") == greedy
    assert (
        logged(out_dir / "log.json", "eval")["eval_wer"]
        == logged(one_process / "log.json", "eval")["eval_wer"]
    )


def test_bf16_precision_transcribes_as_fp32_does(mini: dict, one_process: Path, tmp_path: Path) -> None:
    env = script_env(mini, tmp_path, PREDICTION_FILE=str(tmp_path / "bf16.txt"), PRECISION="bf16")
    out = run_script("inference.sh", env, "--workers", "0")
    assert "--precision bf16" in out.stdout + out.stderr
    fp32 = [h for _, h in read_predictions(one_process / "pred.txt")]
    bf16 = [h for _, h in read_predictions(tmp_path / "bf16.txt")]
    assert len(bf16) == len(fp32) == 36
    assert jiwer.cer(fp32, bf16) < 0.05  # the same letters, bar a few frames whose argmax flips
