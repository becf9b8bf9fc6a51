"""Inference: one cached onnxruntime session per compiled predict graph, weights baked
in as initializers (so onnxruntime may pick its constant-weight kernels)."""
from __future__ import annotations

from kgraph.engine.variable import bound_variables
from kgraph.lower import lower
from kgraph.runtime.session import create_session


class InferenceRunner:
    def __init__(self, onnx_model, input_names, output_names):
        self.onnx_model = onnx_model
        self.input_names = list(input_names)
        self.output_names = list(output_names)
        self.session = create_session(onnx_model)
        self._run = self.session.run

    @classmethod
    def for_model(cls, model):
        return cls(compile_inference(model), model.input_names(), model.output_names())

    def run(self, arrays):
        return self._run(self.output_names, dict(zip(self.input_names, arrays)))


def inference_ir(model):
    """The model's predict graph in the IR, after the inference pipeline."""
    from kgraph.passes.pipelines import run_pipeline
    g, _, outs, _ = model.trace_graph(training=False)
    g.set_outputs(list(zip(model.output_names(), outs)))
    run_pipeline("inference", g)
    return g


def compile_inference(model, freeze_weights=True, metadata=None):
    g = inference_ir(model)
    freeze = {g.g.nodes[v.node]["attrs"]["name"]: var.numpy() for var, v in bound_variables(g)} \
        if freeze_weights else None
    return lower(g, freeze=freeze, metadata=metadata)
