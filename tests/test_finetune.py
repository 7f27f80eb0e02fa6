"""Fine-tuning: a new alphabet's decoder, freezing, lineage, resume, and the `labels` normaliser."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from conftest import REPO, shortest_mini_rows, write_manifest
from hypothesis import given
from hypothesis import strategies as st

from jasper import checkpoint, config
from jasper.cli import main
from jasper.hub import nemo
from jasper.model import Jasper
from jasper.text import normalize_to_labels
from jasper.training.finetune import DECODER_BIAS, DECODER_WEIGHT, Freezer, adapt_decoder

TINY = str(REPO / "configs" / "tiny.yaml")
ENGLISH = list(" abcdefghijklmnopqrstuvwxyz'")
SPANISH = list(" abcdefghijklmnopqrstuvwxyzáéíñóúü")
NEW_LABELS = f"labels={SPANISH!r}"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    data, rows = shortest_mini_rows()
    tmp = tmp_path_factory.mktemp("ft")
    return SimpleNamespace(
        data=str(data),
        train6=write_manifest(tmp / "train6.json", rows[:6]),
        val2=write_manifest(tmp / "val2.json", rows[8:10]),
    )


def train(corpus: SimpleNamespace, out: Path, *extra: str, model_config: str = TINY) -> int:
    return main(
        [
            *("train", "--model_config", model_config, "--train_manifests", corpus.train6),
            *("--val_manifests", corpus.val2, "--dataset_dir", corpus.data, "--output_dir", str(out)),
            *("--num_workers", "0", "--threads", "1", "--batch_size", "2", "--eval_frequency", "1000"),
            *("--prediction_frequency", "1000", "--log_frequency", "1", "--lr", "5e-3"),
            *extra,
        ]
    )


def train_losses(log_file: Path) -> list[float]:
    recs = [json.loads(line[5:]) for line in log_file.read_text().splitlines() if line.startswith("DLLL ")]
    return [r["data"]["train_loss"] for r in recs if r["type"] == "LOG" and "train_loss" in r.get("data", {})]


@pytest.fixture(scope="module")
def english(corpus: SimpleNamespace, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny English model trained for one epoch: the published model of these tests."""
    out = tmp_path_factory.mktemp("english")
    assert train(corpus, out, "--epochs", "1", "--ema", "0.9") == 0
    return out / "Jasper_epoch1_checkpoint.pt"


def test_adapt_decoder_copies_shared_rows_and_the_blank() -> None:
    old, new = list(" ab'"), list(" baé")
    weight = torch.arange(5 * 3, dtype=torch.float32).reshape(5, 3, 1)  # 4 labels + blank
    bias = torch.arange(5, dtype=torch.float32) * 10
    fresh = {DECODER_WEIGHT: torch.full((5, 3, 1), -1.0), DECODER_BIAS: torch.full((5,), -1.0)}
    out, line = adapt_decoder({DECODER_WEIGHT: weight, DECODER_BIAS: bias, "x": bias}, old, new, fresh)
    w, b = out[DECODER_WEIGHT], out[DECODER_BIAS]
    for i_new, i_old in ((0, 0), (1, 2), (2, 1), (4, 4)):  # " ", "b", "a", blank
        assert torch.equal(w[i_new], weight[i_old]) and b[i_new] == bias[i_old]
    assert torch.equal(w[3], fresh[DECODER_WEIGHT][3]) and b[3] == -1.0  # "é" keeps its initialisation
    assert out["x"] is bias
    assert "3 label rows and the blank's copied" in line and "1 initialised (é)" in line and "(')" in line


def test_freezer_keeps_encoder_weights_and_bn_statistics_then_unfreezes() -> None:
    model = Jasper.from_config(config.load(TINY))
    model.train()
    freezer = Freezer(model, "encoder", unfreeze_after=2, freeze_bn=True)
    bn = next(m for m in model.encoder.modules() if isinstance(m, torch.nn.BatchNorm1d))
    before = bn.running_mean.clone()
    feats, lens = torch.randn(2, 64, 50), torch.tensor([50, 40])
    for update in range(3):
        freezer.apply(update)
        model(feats, lens)[0].sum().backward()
        frozen = update < 2
        assert all((p.grad is None) == frozen for p in model.encoder.parameters()), update
        assert all(p.grad is not None for p in model.decoder.parameters())
        assert torch.equal(bn.running_mean, before) == frozen, update
        model.zero_grad(set_to_none=True)
    assert bn.training  # back in the model's mode once unfrozen


def test_new_alphabet_fine_tune_lineage_and_a_fine_tune_of_it(
    corpus: SimpleNamespace, english: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = tmp_path / "es", tmp_path / "es2"
    first_ckpt = first / "Jasper_epoch1_checkpoint.pt"
    extra = ("--epochs", "1", "--override_config", NEW_LABELS, "--freeze", "encoder")
    with caplog.at_level("INFO"):
        assert train(corpus, first, *extra, "--ckpt", str(english), "--freeze_bn") == 0
    assert "decoder rebuilt for 34 labels + blank: 27 label rows" in caplog.text
    assert "7 initialised (á é í ñ ó ú ü)" in caplog.text
    base, tuned = checkpoint.read(english), checkpoint.read(first_ckpt)
    assert tuned["state_dict"][DECODER_WEIGHT].shape[0] == len(SPANISH) + 1
    assert tuned["config"]["labels"] == SPANISH
    for key, value in base["state_dict"].items():  # the frozen encoder, its BN statistics included
        if key.startswith("encoder."):
            assert torch.equal(tuned["state_dict"][key], value), key
    a = ENGLISH.index("a")
    assert not torch.equal(tuned["state_dict"][DECODER_WEIGHT][1], base["state_dict"][DECODER_WEIGHT][a])
    assert tuned["lineage"] == [{"source": str(english), "labels": "".join(ENGLISH)}]

    assert (
        train(corpus, second, "--epochs", "1", "--override_config", NEW_LABELS, "--ckpt", str(first_ckpt))
        == 0
    )
    again = checkpoint.read(second / "Jasper_epoch1_checkpoint.pt")
    assert [e["source"] for e in again["lineage"]] == [str(english), str(first_ckpt)]
    assert again["lineage"][1]["labels"] == "".join(SPANISH)


def test_a_weight_of_another_shape_is_a_one_line_error(
    corpus: SimpleNamespace, english: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cpu = str(REPO / "configs" / "jasper5x3_cpu.yaml")
    assert train(corpus, tmp_path / "x", "--epochs", "1", "--ckpt", str(english), model_config=cpu) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "encoder.layers.0.conv.0.weight: the config needs (64, 64, 11)" in errors[0]
    assert "the checkpoint has (32, 64, 11) (first of" in errors[0]


def test_new_alphabet_fine_tune_from_a_nemo_file(corpus: SimpleNamespace, tmp_path: Path) -> None:
    source = REPO / "tests" / "fixtures" / "nemo" / "quartznet_small.nemo"
    cfg = nemo.read(source)["config"]
    cfg["labels"] = SPANISH
    cfg["input_train"] = cfg["input_val"]
    model_config = tmp_path / "qn_es.yaml"
    model_config.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    out = tmp_path / "from_nemo"
    assert train(corpus, out, "--epochs", "1", "--ckpt", str(source), model_config=str(model_config)) == 0
    tuned = checkpoint.read(out / "Jasper_epoch1_checkpoint.pt")
    assert tuned["state_dict"][DECODER_WEIGHT].shape[0] == len(SPANISH) + 1
    assert tuned["lineage"][0]["source"] == str(source)


def test_fine_tune_resumed_mid_epoch_equals_an_uninterrupted_one(
    corpus: SimpleNamespace, english: Path, tmp_path: Path
) -> None:
    """3 steps an epoch, 2 epochs; the encoder unfreezes at update 3, after the interruption at 2."""
    extra = ["--epochs", "2", "--override_config", NEW_LABELS, "--ckpt", str(english), "--ema", "0.9"]
    extra += ["--freeze", "encoder", "--unfreeze_after_steps", "3", "--freeze_bn"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert train(corpus, straight, *extra) == 0
    assert train(corpus, split, *extra, "--stop_after_steps", "2") == 0
    assert checkpoint.read(split / "Jasper_epoch1_checkpoint.pt")["sampler"]["batches_done"] == 2
    assert train(corpus, split, *extra, "--resume") == 0
    a = checkpoint.read(straight / "Jasper_epoch2_checkpoint.pt")
    b = checkpoint.read(split / "Jasper_epoch2_checkpoint.pt")
    assert a["step"] == b["step"] == 7 and a["lineage"] == b["lineage"]
    losses = [train_losses(d / "nvlog.json") for d in (straight, split)]
    assert len(losses[0]) == len(losses[1]) == 6
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    for key in ("state_dict", "ema_state_dict"):
        for name, value in a[key].items():
            torch.testing.assert_close(b[key][name], value, atol=1e-6, rtol=0, msg=f"{key}.{name}")


def test_labels_normaliser_keeps_another_alphabet() -> None:
    es = "".join(SPANISH)
    assert (
        normalize_to_labels("¿Qué año, Señor Muñoz? À la “carte”, 1999!", es)
        == "qué año señor muñoz a la carte"
    )
    assert normalize_to_labels("Привет, мир!", " абвгдеёжзийклмнопрстуфхцчшщъыьэюя") == "привет мир"
    assert normalize_to_labels("你好，世界", "你好世界") == "你好世界"  # no space label: none kept
    assert normalize_to_labels("it’s", ENGLISH) == "it's"


@given(st.text(max_size=60))
def test_labels_normaliser_output_is_clean_and_idempotent(text: str) -> None:
    es = "".join(SPANISH)
    out = normalize_to_labels(text, es)
    assert set(out) <= set(es) and out == out.strip() and "  " not in out
    assert normalize_to_labels(out, es) == out
