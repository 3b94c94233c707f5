"""Data shipped with graphfix (package data): the onnxruntime CUDA kernel table."""
