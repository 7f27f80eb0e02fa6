"""Fine-tuning: initial weights from any model (another alphabet too), freezing, and lineage.

Why a module of its own: starting from a published model is the most common thing users of this
family do, and three things go wrong there that training from scratch never meets.

* **Another alphabet.** The CTC decoder is a 1x1 convolution with one output row per label plus
  the blank. When the new config's labels differ from the checkpoint's, `adapt_decoder` builds the
  decoder for the new labels: the rows of characters both alphabets share, and the blank's, are
  copied; the others keep the new model's own initialisation. Every other weight must fit by shape,
  or the load fails in one line that names the first key that does not.
* **Too little data for the whole network.** `Freezer` keeps the encoder's weights fixed
  (`--freeze encoder`) for the first `--unfreeze_after_steps` updates or the whole run, so only
  the new decoder learns; `--freeze_bn` also keeps the encoder's BatchNorm statistics as the
  pretrained model had them while it is frozen. The freeze is a function of the update count, so a
  resumed job freezes exactly where the interrupted one would have.
* **Where the weights came from.** A checkpoint records its `lineage`: one entry per fine-tune, with
  the source it started from, that source's published-model record and its labels, so a fine-tune
  of a fine-tuned model still says which published model it began as.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from jasper import checkpoint
from jasper.hub.models import read_checkpoint
from jasper.model import Jasper

log = logging.getLogger(__name__)

DECODER_WEIGHT = "decoder.layers.0.weight"
DECODER_BIAS = "decoder.layers.0.bias"


def _describe(chars: list[str]) -> str:
    shown = " ".join(repr(c) if c == " " else c for c in chars[:12])
    return shown + (f" and {len(chars) - 12} more" if len(chars) > 12 else "")


def adapt_decoder(
    state_dict: dict[str, torch.Tensor],
    old_labels: list[str],
    new_labels: list[str],
    fresh: dict[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], str]:
    """`state_dict` with its decoder rebuilt for `new_labels`, and a line saying what was copied.

    `fresh` holds the new model's own decoder tensors (their initialisation is kept for the
    characters `old_labels` lacks). Class ids follow the reference: label i, then the blank last.
    """
    weight, bias = state_dict[DECODER_WEIGHT], state_dict.get(DECODER_BIAS)
    if weight.shape[0] != len(old_labels) + 1:
        raise checkpoint.CheckpointError(
            f"{DECODER_WEIGHT} has {weight.shape[0]} rows, but the checkpoint's config has "
            f"{len(old_labels)} labels plus the blank"
        )
    new_weight, new_bias = fresh[DECODER_WEIGHT].clone(), fresh.get(DECODER_BIAS)
    if new_weight.shape[1:] != weight.shape[1:]:
        raise checkpoint.CheckpointError(
            f"{DECODER_WEIGHT}: checkpoint {tuple(weight.shape)} vs model {tuple(new_weight.shape)}: "
            "the encoder's output width differs"
        )
    new_bias = new_bias.clone() if new_bias is not None else None
    old_index = {c: i for i, c in enumerate(old_labels)}
    pairs = [(i, old_index[c]) for i, c in enumerate(new_labels) if c in old_index]
    pairs.append((len(new_labels), len(old_labels)))  # the blank
    rows_new, rows_old = zip(*pairs, strict=True)
    new_weight[list(rows_new)] = weight[list(rows_old)].to(new_weight.dtype)
    if new_bias is not None and bias is not None:
        new_bias[list(rows_new)] = bias[list(rows_old)].to(new_bias.dtype)
    out = dict(state_dict)
    out[DECODER_WEIGHT] = new_weight
    if new_bias is not None:
        out[DECODER_BIAS] = new_bias
    copied = [c for c in new_labels if c in old_index]
    fresh_chars = [c for c in new_labels if c not in old_index]
    dropped = [c for c in old_labels if c not in set(new_labels)]
    line = (
        f"decoder rebuilt for {len(new_labels)} labels + blank: {len(copied)} label rows and the blank's "
        f"copied ({_describe(copied)}), {len(fresh_chars)} initialised ({_describe(fresh_chars) or 'none'})"
    )
    if dropped:
        line += f", {len(dropped)} of the checkpoint's left out ({_describe(dropped)})"
    return out, line


def initial_weights(model: Jasper, ema_model: nn.Module | None, spec: str, labels: list[str]) -> list[dict]:
    """Load `spec` (a checkpoint, published name, .nemo or URL) into `model` and `ema_model` for
    fine-tuning with `labels`; the lineage the new checkpoints carry."""
    state = read_checkpoint(spec)
    source_cfg = state.get("config") if isinstance(state.get("config"), dict) else {}
    old_labels = list(source_cfg.get("labels") or labels)
    fresh = model.state_dict()
    for target, key in ((model, "state_dict"), (ema_model, "ema_state_dict")):
        if target is None:
            continue
        weights = checkpoint.clean_state_dict(state.get(key) or state["state_dict"])
        if old_labels != list(labels):
            if DECODER_WEIGHT not in weights:
                raise checkpoint.CheckpointError(f"{spec}: no {DECODER_WEIGHT} in its {key}")
            weights, line = adapt_decoder(weights, old_labels, list(labels), fresh)
            if target is model:
                log.info("%s: %s", spec, line)
        _check_shapes(target.state_dict(), weights, f"{spec} [{key}]")
        checkpoint.load_state_dict(target, weights, source=f"{spec} [{key}]")
    log.info("initial weights from %s (fine-tuning: optimizer and counters start fresh)", spec)
    entry: dict[str, Any] = {"source": str(spec), "labels": "".join(old_labels)}
    if state.get("published"):
        entry["published"] = state["published"]
    return [*state.get("lineage", []), entry]


def _check_shapes(own: dict[str, torch.Tensor], weights: dict[str, torch.Tensor], source: str) -> None:
    """One line naming the first weight of the model that the checkpoint lacks or has in another shape."""
    bad = [k for k in own if k not in weights or weights[k].shape != own[k].shape]
    if bad:
        k = bad[0]
        has = f"has {tuple(weights[k].shape)}" if k in weights else "has no such weight"
        raise checkpoint.CheckpointError(
            f"{source}: {k}: the config needs {tuple(own[k].shape)}, the checkpoint {has} "
            f"(first of {len(bad)} mismatched weights; only the decoder may differ, for a new alphabet)"
        )


class Freezer:
    """Keeps the encoder fixed for the first `unfreeze_after` updates (0: the whole run).

    Frozen parameters have `requires_grad` off, so backward skips the encoder entirely (a frozen
    first stage needs no gradient at all), and the optimizer skips them (they have no gradient).
    With `freeze_bn` the encoder's BatchNorm layers stay in eval mode while frozen, so their running
    statistics stay the pretrained model's.
    """

    def __init__(self, model: Jasper, part: str, unfreeze_after: int, freeze_bn: bool) -> None:
        self.encoder = model.encoder
        self.part, self.unfreeze_after, self.freeze_bn = part, unfreeze_after, freeze_bn
        self.frozen: bool | None = None

    def frozen_at(self, updates: int) -> bool:
        return self.part == "encoder" and (self.unfreeze_after == 0 or updates < self.unfreeze_after)

    def apply(self, updates: int) -> bool:
        """Set the encoder's state for the update after `updates`; True when it changed."""
        frozen = self.frozen_at(updates)
        if frozen and self.freeze_bn:  # every step: evaluation switches the model back to train()
            for m in self.encoder.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        if frozen == self.frozen:
            return False
        changed = self.frozen is not None
        self.frozen = frozen
        for p in self.encoder.parameters():
            p.requires_grad_(not frozen)
        if not frozen:  # BatchNorm layers follow the model's mode again
            self.encoder.train(self.encoder.training)
        if frozen:
            log.info(
                "encoder frozen%s%s",
                f" for the first {self.unfreeze_after} updates" if self.unfreeze_after else "",
                " (BatchNorm statistics too)" if self.freeze_bn else "",
            )
        elif changed:
            log.info("encoder unfrozen at update %d", updates)
        return changed
