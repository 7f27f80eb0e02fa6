"""Word language models: the n-gram directory layout, CTC beam search with an LM, and the
`jasper lm build/tune/decode` command."""
