"""What NeMo's front-end switch changes: the same QuartzNet 15x5 run with NeMo 1.x's and NeMo 2.5's
front end (`JASPER_NEMO_FRONTEND=1.x|2.5`), and with the reference's log guard, on real clips.

    python benchmarks/nemo_frontends.py [--clips DIR]

QuartzNet 15x5 in NeMo's published configuration (tests/fixtures/nemo/quartznet15x5_layout.json),
random weights with random BatchNorm statistics and a decoder scaled up (peaked posteriors, as a
trained model's are), seeded. For each pair of front ends it prints how many clips get a different
number of frames, the largest feature difference on the frames both have, at the edges (first and
last 3 frames) and inside, the largest difference in output probabilities, and the share of output
frames whose argmax differs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import soundfile as sf
import torch

from jasper import config
from jasper.features import FilterbankFeatures
from jasper.hub import nemo
from jasper.model import Jasper

REPO = Path(__file__).resolve().parents[1]
LAYOUT = REPO / "tests" / "fixtures" / "nemo" / "quartznet15x5_layout.json"
VARIANTS = {
    "NeMo 1.x": ("reference", nemo.LOG_ZERO_GUARD),
    "NeMo 2.5+": ("nemo-2.5", nemo.LOG_ZERO_GUARD),
    "DeepLearningExamples": ("reference", 1e-20),
}
PAIRS = [("NeMo 1.x", "NeMo 2.5+"), ("DeepLearningExamples", "NeMo 1.x")]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--clips", type=Path, default=REPO.parent / "shared" / "data" / "librispeech-real-mini", help="audio"
    )
    args = parser.parse_args()
    torch.set_num_threads(2)
    cfg = nemo.jasper_config(json.loads(LAYOUT.read_text())["config"], "reference", source="quartznet15x5")
    torch.manual_seed(0)
    model = Jasper.from_config(cfg).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
        for p in model.decoder.parameters():
            p.mul_(8.0)  # peaked posteriors, as a trained model's are
    section = config.section(cfg, "input_val", "filterbank_features")
    fronts = {
        name: FilterbankFeatures(**{**section, "frontend": f, "log_zero_guard_value": g}).eval()
        for name, (f, g) in VARIANTS.items()
    }
    clips = sorted(args.clips.glob("*/*/*/*.flac"))
    stats = {
        pair: {"frames": 0, "edge": 0.0, "inner": 0.0, "prob": 0.0, "argmax": 0, "out": 0} for pair in PAIRS
    }
    with torch.inference_mode():
        for clip in clips:
            audio = torch.from_numpy(sf.read(clip, dtype="float32")[0])[None]
            n = torch.tensor([audio.shape[1]])
            out = {}
            for name, front in fronts.items():
                feats, lens = front(audio, n)
                log_probs, out_lens = model(feats, lens)
                out[name] = (feats[0, :, : int(lens[0])], log_probs[0, : int(out_lens[0])])
            for a, b in PAIRS:
                (fa, pa), (fb, pb) = out[a], out[b]
                s = stats[(a, b)]
                s["frames"] += fa.shape[1] != fb.shape[1]
                t = min(fa.shape[1], fb.shape[1])
                diff = (fa[:, :t] - fb[:, :t]).abs().amax(0)
                s["edge"] = max(s["edge"], diff[:3].max().item(), diff[-3:].max().item())
                s["inner"] = max(s["inner"], diff[3:-3].max().item())
                u = min(pa.shape[0], pb.shape[0]) - 1  # the last frame sees the edge differently
                s["prob"] = max(s["prob"], (pa[:u].exp() - pb[:u].exp()).abs().max().item())
                s["argmax"] += int((pa[:u].argmax(-1) != pb[:u].argmax(-1)).sum())
                s["out"] += u
    print(f"QuartzNet 15x5, random weights, {len(clips)} real clips")
    print("| front ends | clips, other frame count | feature diff: edges | inside | prob diff | argmax |")
    print("|---|---:|---:|---:|---:|---:|")
    for (a, b), s in stats.items():
        share = 100 * s["argmax"] / max(s["out"], 1)
        cells = f"{s['edge']:.3g} | {s['inner']:.3g} | {s['prob']:.3g} | {share:.2f}% differs"
        print(f"| {a} vs {b} | {s['frames']} | {cells} |")


if __name__ == "__main__":
    main()
