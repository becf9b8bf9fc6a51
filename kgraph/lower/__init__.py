"""Lowering: IR -> standard ONNX."""
from kgraph.lower.onnx_lower import OPSET, lower  # noqa: F401
