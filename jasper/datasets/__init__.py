"""Corpus builders: LibriSpeech download and preparation, and the offline synthetic TTS corpus."""
