"""Published models: the catalogue of NVIDIA's and NeMo's Jasper/QuartzNet checkpoints, their
download into the user cache, NeMo's `.nemo` format, and one reader for a name, a path or a URL."""
