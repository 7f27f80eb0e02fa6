"""Write the NeMo parity fixtures with NeMo's own code (run it in .venv-nemo: scripts/setup_nemo.sh).

    .venv-nemo/bin/python scripts/make_nemo_fixtures.py [--shared ../shared] [--out tests/fixtures/nemo]

It writes, into --out:
- `quartznet_small.nemo` and `jasperdr_small.nemo`: small random-weight models in QuartzNet
  (separable) and Jasper dense-residual layout, saved with NeMo's `save_to()`. Every BatchNorm
  parameter and statistic is drawn at random and the decoder scaled up, so that a mix-up of keys
  changes the outputs and the posteriors are peaked, as a trained model's are.
- `reference.pt`: NeMo's features of real clips from `../shared/data/librispeech-real-mini`, and
  each model's log-probs of them (each clip alone, and the clips as one padded batch).
- `quartznet15x5_layout.json`: NeMo's QuartzNet 15x5 (the published configuration, random
  weights): its config, state_dict keys and shapes, and parameter count.
NeMo is not a dependency of jasper: only this script and benchmarks/nemo_side_by_side.py import it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import soundfile as sf
import torch
from nemo.collections.asr.models import EncDecCTCModel
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
LABELS = [" ", *"abcdefghijklmnopqrstuvwxyz", "'"]
CLIPS = [
    "test-clean/1089/134686/1089-134686-0000.flac",
    "dev-clean/2412/153948/2412-153948-0000.flac",
    "test-other/1688/142285/1688-142285-0000.flac",
]


def block(filters, repeat, kernel, *, stride=1, dilation=1, residual=True, separable=False, dense=False):
    return {
        "filters": filters,
        "repeat": repeat,
        "kernel": [kernel],
        "stride": [stride],
        "dilation": [dilation],
        "dropout": 0.0,
        "residual": residual,
        "separable": separable,
        **({"residual_dense": True} if dense else {}),
    }


SMALL = {
    "quartznet_small": [
        block(64, 1, 33, stride=2, residual=False, separable=True),
        block(64, 2, 33, separable=True),
        block(96, 2, 39, separable=True),
        block(128, 1, 87, dilation=2, residual=False, separable=True),
        block(128, 1, 1, residual=False),
    ],
    "jasperdr_small": [
        block(32, 1, 11, stride=2, residual=False),
        block(32, 2, 11, dense=True),
        block(48, 2, 13, dense=True),
        block(48, 2, 17, dense=True),
        block(64, 1, 29, dilation=2, residual=False),
        block(64, 1, 1, residual=False),
    ],
}
# QuartzNet 15x5 as NeMo publishes it (examples/asr/conf/quartznet/quartznet_15x5.yaml).
QUARTZNET15X5 = [
    block(256, 1, 33, stride=2, residual=False, separable=True),
    *[block(256, 5, 33, separable=True)] * 3,
    *[block(256, 5, 39, separable=True)] * 3,
    *[block(512, 5, 51, separable=True)] * 3,
    *[block(512, 5, 63, separable=True)] * 3,
    *[block(512, 5, 75, separable=True)] * 3,
    block(512, 1, 87, dilation=2, residual=False, separable=True),
    block(1024, 1, 1, residual=False),
]


def model_config(blocks: list[dict]) -> dict:
    return {
        "sample_rate": 16000,
        "labels": LABELS,
        "preprocessor": {
            "_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
            "normalize": "per_feature",
            "window_size": 0.02,
            "sample_rate": 16000,
            "window_stride": 0.01,
            "window": "hann",
            "features": 64,
            "n_fft": 512,
            "frame_splicing": 1,
            "dither": 1e-5,
        },
        "encoder": {
            "_target_": "nemo.collections.asr.modules.ConvASREncoder",
            "feat_in": 64,
            "activation": "relu",
            "conv_mask": True,
            "jasper": blocks,
        },
        "decoder": {
            "_target_": "nemo.collections.asr.modules.ConvASRDecoder",
            "feat_in": blocks[-1]["filters"],
            "num_classes": len(LABELS),
            "vocabulary": LABELS,
        },
    }


def build(blocks: list[dict], seed: int) -> EncDecCTCModel:
    torch.manual_seed(seed)
    model = EncDecCTCModel(cfg=OmegaConf.create(model_config(blocks)))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
        for p in model.decoder.parameters():
            p.mul_(8.0)
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared", help="the shared/ folder")
    parser.add_argument("--out", type=Path, default=REPO / "tests" / "fixtures" / "nemo", help="output folder")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    root = args.shared / "data" / "librispeech-real-mini"
    audio = [torch.from_numpy(sf.read(root / clip, dtype="float32")[0]) for clip in CLIPS]
    lengths = torch.tensor([len(a) for a in audio])
    batch = torch.nn.utils.rnn.pad_sequence(audio, batch_first=True)

    reference: dict = {"clips": CLIPS, "nemo_version": __import__("nemo").__version__}
    for seed, (name, blocks) in enumerate(SMALL.items()):
        model = build(blocks, seed)
        model.save_to(str(args.out / f"{name}.nemo"))
        with torch.inference_mode():
            alone = []
            for a in audio:
                log_probs, out_len, _ = model(input_signal=a[None], input_signal_length=torch.tensor([len(a)]))
                alone.append(log_probs[0, : int(out_len[0])].clone())
            if "features" not in reference:  # the models share one preprocessor configuration
                reference["features"] = []
                for a in audio:
                    feats, n = model.preprocessor(input_signal=a[None], length=torch.tensor([len(a)]))
                    reference["features"].append(feats[0, :, : int(n[0])].clone())
            log_probs, out_len, _ = model(input_signal=batch, input_signal_length=lengths)
        reference[name] = {"log_probs": alone, "batch_log_probs": log_probs.clone(), "batch_lengths": out_len.clone()}
        print(f"{name}: {sum(p.numel() for p in model.parameters()):,} parameters")
    torch.save(reference, args.out / "reference.pt")

    full = build(QUARTZNET15X5, 0)
    layout = {
        "config": OmegaConf.to_container(full.cfg, resolve=True),
        "state_dict": {k: list(v.shape) for k, v in full.state_dict().items()},
        "parameters": sum(p.numel() for p in full.parameters()),
    }
    (args.out / "quartznet15x5_layout.json").write_text(json.dumps(layout, indent=1) + "\n")
    print(f"quartznet15x5: {layout['parameters']:,} parameters, {len(layout['state_dict'])} tensors")


if __name__ == "__main__":
    main()
