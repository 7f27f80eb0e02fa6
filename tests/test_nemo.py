"""NeMo `.nemo` import: jasper runs NeMo's models as NeMo does.

The fixtures in tests/fixtures/nemo were written by NeMo 3.0.0's own code
(`scripts/make_nemo_fixtures.py`): two small random-weight models saved with `save_to()`, in
QuartzNet (separable) and Jasper dense-residual layout, NeMo's features and log-probs of three real
LibriSpeech clips, and the layout of NeMo's full QuartzNet 15x5.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
import soundfile as sf
import torch
import yaml
from conftest import REPO, mini_manifest, require_shared, write_manifest

import jasper
from jasper import config
from jasper.checkpoint import CheckpointError
from jasper.cli import main
from jasper.hub import nemo
from jasper.inference.pipeline import log_probs
from jasper.model import Jasper

FIXTURES = REPO / "tests" / "fixtures" / "nemo"
MODELS = ["quartznet_small", "jasperdr_small"]
PROB_TOLERANCE = 1e-3
MARGIN = 0.01


@pytest.fixture(scope="module")
def reference() -> dict:
    return torch.load(FIXTURES / "reference.pt", weights_only=True)


def clip_audio(clip: str) -> torch.Tensor:
    root = require_shared("data", "librispeech-real-mini")
    return torch.from_numpy(sf.read(root / clip, dtype="float32")[0])


def assert_like_nemo(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    """NeMo's frame count; probabilities within 1e-3 on every valid frame but the last; NeMo's argmax
    wherever NeMo's top-2 log-prob margin exceeds 0.01."""
    assert ours.shape == theirs.shape
    assert (ours.exp() - theirs.exp())[:-1].abs().max() < PROB_TOLERANCE
    top2 = theirs.topk(2, dim=-1).values
    decided = (top2[:, 0] - top2[:, 1]) > MARGIN
    assert decided.float().mean() > 0.5  # the test has teeth: most frames are decided
    assert torch.equal(ours.argmax(-1)[decided], theirs.argmax(-1)[decided])


@pytest.mark.parametrize("name", MODELS)
def test_the_nemo_file_transcribes_as_nemo_does(name: str, reference: dict) -> None:
    pipe = jasper.load_model(FIXTURES / f"{name}.nemo", device="cpu")
    assert pipe.pad_leading == 0 and pipe.features.frontend == "nemo-2.5"
    for i, clip in enumerate(reference["clips"]):
        audio = clip_audio(clip)
        ours = log_probs(audio, pipe.model, pipe.features, pad_leading=pipe.pad_leading)
        assert_like_nemo(ours, reference[name]["log_probs"][i])


def test_features_equal_nemos(reference: dict) -> None:
    pipe = jasper.load_model(FIXTURES / "quartznet_small.nemo", device="cpu")
    for i, clip in enumerate(reference["clips"]):
        audio = clip_audio(clip)
        feats, n = pipe.features(audio[None], torch.tensor([len(audio)]))
        theirs = reference["features"][i]
        assert int(n[0]) == theirs.shape[1]
        assert (feats[0, :, : int(n[0])] - theirs).abs().max() < 1e-4


@pytest.mark.parametrize("name", MODELS)
def test_a_padded_batch_gives_nemos_batch_outputs(name: str, reference: dict) -> None:
    pipe = jasper.load_model(FIXTURES / f"{name}.nemo", device="cpu")
    audio = [clip_audio(c) for c in reference["clips"]]
    lengths = torch.tensor([len(a) for a in audio])
    batch = torch.nn.utils.rnn.pad_sequence(audio, batch_first=True)
    with torch.inference_mode():
        out, out_lens = pipe.model(*pipe.features(batch, lengths))
    assert torch.equal(out_lens, reference[name]["batch_lengths"])
    for i, n in enumerate(out_lens.tolist()):
        assert_like_nemo(out[i, :n], reference[name]["batch_log_probs"][i, :n])


def test_full_quartznet15x5_layout_and_parameter_count() -> None:
    layout = json.loads((FIXTURES / "quartznet15x5_layout.json").read_text())
    cfg = nemo.jasper_config(layout["config"], "nemo-2.5", source="quartznet15x5")
    ours = {k: list(v.shape) for k, v in Jasper.from_config(cfg).state_dict().items()}
    theirs = {k: v for k, v in layout["state_dict"].items() if not k.startswith("preprocessor.")}
    assert ours == {nemo.rename_keys({k: torch.empty(0)}).popitem()[0]: v for k, v in theirs.items()}
    model = Jasper.from_config(cfg)
    assert sum(p.numel() for p in model.parameters()) == layout["parameters"] == 18_924_381


def test_frontend_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    assert nemo.read(FIXTURES / "quartznet_small.nemo")["nemo"]["frontend"] == "2.5"
    features = nemo.read(FIXTURES / "quartznet_small.nemo", frontend="1.x")["config"]["input_val"]
    assert features["filterbank_features"]["frontend"] == "reference"
    assert features["filterbank_features"]["log_zero_guard_value"] == 2**-24
    monkeypatch.setenv(nemo.FRONTEND_VARIABLE, "1.x")
    assert nemo.read(FIXTURES / "quartznet_small.nemo")["nemo"]["frontend"] == "1.x"
    monkeypatch.setenv(nemo.FRONTEND_VARIABLE, "2.0")
    with pytest.raises(config.ConfigError, match="JASPER_NEMO_FRONTEND='2.0'"):
        nemo.read(FIXTURES / "quartznet_small.nemo")


def rewrite_nemo(src: Path, dst: Path, edit, gzip: bool = False) -> Path:
    """A copy of `src` whose model_config.yaml went through `edit`, gzipped or plain, names without './'."""
    with tarfile.open(src) as tar:
        files = {Path(m.name).name: tar.extractfile(m).read() for m in tar if m.isfile()}
    cfg = yaml.safe_load(files["model_config.yaml"])
    edit(cfg)
    files["model_config.yaml"] = yaml.safe_dump(cfg).encode()
    import io

    with tarfile.open(dst, "w:gz" if gzip else "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return dst


def test_gzipped_archives_and_plain_member_names_read_alike(tmp_path: Path) -> None:
    copy = rewrite_nemo(FIXTURES / "jasperdr_small.nemo", tmp_path / "old.nemo", lambda cfg: None, gzip=True)
    ours, theirs = nemo.read(copy), nemo.read(FIXTURES / "jasperdr_small.nemo")
    assert ours["config"] == theirs["config"]
    assert all(torch.equal(ours["state_dict"][k], v) for k, v in theirs["state_dict"].items())


def test_what_jasper_cannot_express_is_refused_by_name(tmp_path: Path) -> None:
    def squeeze_excite(cfg: dict) -> None:
        cfg["encoder"]["jasper"][1]["se"] = True

    bad = rewrite_nemo(FIXTURES / "quartznet_small.nemo", tmp_path / "se.nemo", squeeze_excite)
    with pytest.raises(config.ConfigError, match=r"encoder\.jasper\[1\]\.se: True is not supported"):
        nemo.read(bad)
    (tmp_path / "junk.nemo").write_bytes(b"not a tar")
    with pytest.raises(CheckpointError, match="cannot be read as a .nemo"):
        nemo.read(tmp_path / "junk.nemo")


@pytest.mark.slow
def test_transcribe_and_infer_take_a_nemo_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = require_shared("data", "librispeech-real-mini")
    rows = mini_manifest(root, limit=4)
    manifest = write_manifest(tmp_path / "m.json", rows)
    model = str(FIXTURES / "quartznet_small.nemo")
    clip = str(root / rows[0]["audio_filepath"])
    assert main(["transcribe", "--model", model, "--device", "cpu", clip]) == 0
    assert capsys.readouterr().out.startswith(clip)
    argv = ["infer", "--model", model, "--cpu", "--dataset_dir", str(root), "--val_manifests", manifest]
    argv += ["--save_predictions", str(tmp_path / "p.txt"), "--save_logits", str(tmp_path / "l.npz")]
    assert main([*argv, "--output_dir", str(tmp_path)]) == 0
    assert "eval_wer" in capsys.readouterr().out
    assert len((tmp_path / "p.txt").read_text().splitlines()) == 4 and (tmp_path / "l.npz").stat().st_size
    assert main(["transcribe", "--model", model, "--ckpt", model, "x.wav"]) == 2
    assert "--model and --ckpt both name the weights" in capsys.readouterr().err
