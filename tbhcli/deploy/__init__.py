"""Runs in, ONNX sign encoders out (`tbh export`), and the onnxruntime sessions that run them."""
