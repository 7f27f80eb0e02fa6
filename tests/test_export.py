"""`jasper export`: ONNX Runtime and TorchScript files against eager PyTorch on variable-length batches.

The eager reference for every utterance is the package's own pipeline run on that utterance alone
(FilterbankFeatures -> Jasper -> greedy decoding), so these tests also pin down that the exported
pipeline is batch-independent: a short utterance padded into a batch gives what it gives alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, SHARED

import jasper
from jasper import audio, config
from jasper.checkpoint import atomic_save
from jasper.cli import main
from jasper.decoding import collapse, greedy_decode
from jasper.features import FilterbankFeatures
from jasper.inference import export
from jasper.model import Jasper
from jasper.text import Tokenizer

pytest.importorskip("onnxruntime", reason="ONNX Runtime is not installed: pip install -e '.[export]'")
pytest.importorskip(
    "onnxscript", reason="onnxscript (torch's ONNX exporter) is missing: pip install -e '.[export]'"
)

TINY = REPO / "configs" / "tiny.yaml"


def _clips() -> list[np.ndarray]:
    """Real speech of four different lengths (none a multiple of the hop), or seeded noise."""
    files = sorted((SHARED / "data" / "librispeech-real-mini").rglob("*.flac"))[:4]
    seconds = [0.9, 2.37, 1.55, 3.1]
    if len(files) == 4:
        return [audio.load(f)[: int(s * 16000)] for f, s in zip(files, seconds, strict=True)]
    rng = np.random.default_rng(0)
    return [(0.1 * rng.standard_normal(int(s * 16000))).astype(np.float32) for s in seconds]


def _batch(clips: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    lens = np.array([len(c) for c in clips], dtype=np.int32)
    x = np.zeros((len(clips), lens.max()), dtype=np.float32)
    for row, c in zip(x, clips, strict=True):
        row[: len(c)] = c
    return x, lens


class Exported:
    def __init__(self, root: Path) -> None:
        self.cfg = config.load(TINY)
        torch.manual_seed(0)
        self.model = Jasper.from_config(self.cfg).eval()
        self.features = FilterbankFeatures(
            **config.section(self.cfg, "input_val", "filterbank_features")
        ).eval()
        self.tokenizer = Tokenizer(self.cfg["labels"])
        self.dir = root
        self.manifest = export.export(self.cfg, self.model, root, ["onnx", "torchscript"], ["fp32"])

    def alone(self, clip: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
        """Eager features, log-probs and transcript of one utterance on its own."""
        with torch.no_grad():
            feats, lens = self.features(torch.from_numpy(clip)[None], torch.tensor([len(clip)]))
            log_probs, out_lens = self.model(feats, lens)
        text = greedy_decode(log_probs, out_lens, self.tokenizer)[0]
        return feats[0, :, : lens[0]].numpy(), log_probs[0, : out_lens[0]].numpy(), text

    def pipeline(self, fmt: str, clips: list[np.ndarray]) -> tuple[list, np.ndarray, np.ndarray, list[str]]:
        """The exported files chained on one padded batch: features, log-probs, lengths, texts."""
        run = {n: export.runner(export.export_path(self.dir, n, fmt, "fp32")) for n in export.COMPONENTS}
        feats, feat_lens = run["feature-extractor"](*_batch(clips))
        log_probs, out_lens = run["acoustic-model"](feats, feat_lens)
        (ids,) = run["decoder"](log_probs, out_lens)
        texts = [
            self.tokenizer.decode(collapse(row[:n].tolist(), self.tokenizer.blank))
            for row, n in zip(ids, out_lens, strict=True)
        ]
        return [f[:, :n] for f, n in zip(feats, feat_lens, strict=True)], log_probs, out_lens, texts


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    return Exported(tmp_path_factory.mktemp("export"))


def test_every_file_was_verified_against_eager(exported: Exported) -> None:
    files = exported.manifest["files"]
    assert sorted(files) == [
        "acoustic-model.fp32.onnx",
        "acoustic-model.fp32.pt",
        "decoder.onnx",
        "decoder.pt",
        "feature-extractor.onnx",
        "feature-extractor.pt",
    ]
    for name, entry in files.items():
        assert (exported.dir / name).is_file()
        assert entry["max_abs_diff"] <= export.TOLERANCE[entry["component"]], name
    assert json.loads((exported.dir / "export.json").read_text())["labels"] == exported.cfg["labels"]


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_padded_batch_matches_eager_per_utterance(exported: Exported, fmt: str) -> None:
    clips = _clips()
    feats, log_probs, out_lens, texts = exported.pipeline(fmt, clips)
    for i, clip in enumerate(clips):
        want_feats, want_log_probs, want_text = exported.alone(clip)
        assert feats[i].shape == want_feats.shape
        # Log-mel features: ONNX Runtime's DFT rounds differently from torch's FFT (see TOLERANCE).
        assert np.abs(feats[i] - want_feats).max() <= export.TOLERANCE["feature-extractor"]
        assert out_lens[i] == len(want_log_probs)
        assert np.abs(log_probs[i, : out_lens[i]] - want_log_probs).max() <= 1e-3
        assert texts[i] == want_text


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_acoustic_model_matches_eager_within_1e_4(exported: Exported, fmt: str) -> None:
    """Same input features for both: the acoustic model alone is held to 1e-4 on a ragged batch."""
    clips = _clips()
    feats, lens = exported.features(*map(torch.from_numpy, _batch(clips)))
    with torch.no_grad():
        want, want_lens = exported.model(feats, lens)
    run = export.runner(export.export_path(exported.dir, "acoustic-model", fmt, "fp32"))
    got, got_lens = run(feats.numpy(), lens.numpy())
    assert np.array_equal(got_lens, want_lens.numpy())
    for i, n in enumerate(got_lens):
        assert np.abs(got[i, :n] - want[i, :n].numpy()).max() <= 1e-4


def test_short_utterance_decodes_the_same_alone_and_in_a_padded_batch(exported: Exported) -> None:
    clips = _clips()
    short = min(clips, key=len)
    _, alone_lp, alone_lens, alone_text = exported.pipeline("onnx", [short])
    _, batch_lp, batch_lens, batch_texts = exported.pipeline("onnx", [max(clips, key=len), short])
    n = alone_lens[0]
    assert batch_lens[1] == n
    assert np.abs(batch_lp[1, :n] - alone_lp[0, :n]).max() <= 1e-4
    assert batch_texts[1] == alone_text[0]


def test_feature_extractor_is_batch_independent_where_eager_batching_is_not(exported: Exported) -> None:
    """Eager FilterbankFeatures reflect-pads the batch end, so a shorter row's last frames see zeros."""
    clips = _clips()
    wrapper = export.build_components(exported.cfg, exported.model)["feature-extractor"]
    x, lens = map(torch.from_numpy, _batch(clips))
    with torch.no_grad():
        batched, feat_lens = wrapper(x, lens)
    for i, clip in enumerate(clips):
        want, _, _ = exported.alone(clip)
        assert torch.allclose(batched[i, :, : feat_lens[i]], torch.from_numpy(want), atol=1e-5)
        assert batched[i, :, feat_lens[i] :].abs().max() == 0


def test_cli_exports_fp16_and_rejects_bad_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config.load(TINY)
    ckpt = tmp_path / "tiny.pt"
    atomic_save({"state_dict": Jasper.from_config(cfg).state_dict()}, ckpt)
    args = ["export", "--model_config", str(TINY), "--ckpt", str(ckpt), "--output_dir", str(tmp_path / "out")]
    assert main([*args, "--format", "onnx", "--precision", "fp16"]) == 0
    files = json.loads((tmp_path / "out" / "export.json").read_text())["files"]
    assert sorted(files) == ["acoustic-model.fp16.onnx", "decoder.onnx", "feature-extractor.onnx"]
    entry = files["acoustic-model.fp16.onnx"]
    assert entry["precision"] == "fp16" and entry["max_abs_diff"] <= export.TOLERANCE["acoustic-model-fp16"]
    with pytest.raises(SystemExit):
        main([*args, "--format", "tensorrt"])
    assert "choose from onnx,torchscript" in capsys.readouterr().err


@pytest.mark.slow
def test_a_nemo_model_exports_and_makes_a_triton_repository(tmp_path: Path) -> None:
    """`--model x.nemo` for export and triton-repo: NeMo 2.5's front end (zero padding, floor frame
    count, pre-emphasis masked) exports batch-independent and matches eager within tolerance."""
    nemo = str(REPO / "tests" / "fixtures" / "nemo" / "quartznet_small.nemo")
    out = tmp_path / "out"
    assert main(["export", "--model", nemo, "--format", "onnx", "--output_dir", str(out)]) == 0
    files = json.loads((out / "export.json").read_text())["files"]
    assert sorted(files) == ["acoustic-model.fp32.onnx", "decoder.onnx", "feature-extractor.onnx"]
    for name, entry in files.items():
        assert entry["max_abs_diff"] <= export.TOLERANCE[name.split(".")[0]], name
    features = jasper.load_model(nemo, device="cpu").features
    clips = _clips()
    feats, feat_lens = export.runner(out / "feature-extractor.onnx")(*_batch(clips))
    for clip, batched, n in zip(clips, feats, feat_lens, strict=True):
        alone, length = features(torch.from_numpy(clip)[None], torch.tensor([len(clip)]))
        assert n == length[0]
        assert np.abs(batched[:, :n] - alone[0, :, :n].numpy()).max() < export.TOLERANCE["feature-extractor"]
    assert main(["triton-repo", "--model", nemo, "--out", str(tmp_path / "repo")]) == 0
    assert (tmp_path / "repo" / "acoustic-model" / "config.pbtxt").is_file()
