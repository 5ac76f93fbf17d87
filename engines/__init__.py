"""``python -m engines.build``: TensorRT engines from the exported ONNX files, with manifests."""
