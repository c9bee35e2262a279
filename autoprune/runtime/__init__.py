"""The model as a runtime runs it: size, MACs, latency, int8, ONNX/TorchScript conversion, memory checks."""
