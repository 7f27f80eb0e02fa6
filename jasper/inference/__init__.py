"""Inference: whole recordings (`pipeline`), streams, the engines that run the acoustic model
(eager, int8, ONNX Runtime), export, and the `infer`, `transcribe` and `infer-benchmark` commands."""
