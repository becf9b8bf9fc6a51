"""Inference: one cached onnxruntime session per compiled predict graph (weights baked in
as initializers, so onnxruntime may pick its constant-weight kernels)."""
from __future__ import annotations

from kgraph.runtime.session import create_session


class InferenceRunner:
    def __init__(self, onnx_model, input_names, output_names):
        self.onnx_model = onnx_model
        self.input_names = list(input_names)
        self.output_names = list(output_names)
        self.session = create_session(onnx_model)
        self._run = self.session.run

    def run(self, arrays):
        return self._run(self.output_names, dict(zip(self.input_names, arrays)))


def compile_inference(model, **kwargs):
    """Kept for callers of the earlier location; the compiler lives in kgraph.export."""
    from kgraph.export import compile_inference as _compile
    return _compile(model, **kwargs)
