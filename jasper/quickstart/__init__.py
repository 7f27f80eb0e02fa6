"""The quickstart: a TTS corpus, an LM, a CPU-sized model trained and evaluated, and the report."""
