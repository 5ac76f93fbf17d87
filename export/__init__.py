"""``python -m export``: ONNX exports (FP32 and FP16) of the neural methods, with sidecars."""
