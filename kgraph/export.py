"""Export: ONNX files for serving and for training anywhere onnxruntime runs.

Serving: the inference pipeline (Dropout removed, folding, fusion), weights as
initializers, input and output names from the Keras model, the producer and the Keras
config in metadata_props; standard ONNX only unless the `onnxruntime` target is asked for.

Training: the train-step, eval and predict graphs, the initial weights and optimizer
state (`state.npz`), and `manifest.json` naming every input and output and which outputs
feed which inputs on the next step, so a program with only onnxruntime can train.
"""
from __future__ import annotations

import io
import json
import os

import numpy as np
import onnx

from kgraph.engine.variable import bound_variables
from kgraph.lower import OPSET, lower
from kgraph.saving_atomic import atomic_write_bytes

MAX_OPSET = 21
TWO_GB = 2 ** 31


def inference_ir(model, passes=None, freeze_weights=True):
    """The model's predict graph in the IR, weights frozen to constants (unless asked not
    to), after the inference pipeline (or `passes`)."""
    from kgraph.passes.freeze import freeze_inputs
    from kgraph.passes.pipelines import run_pipeline
    g, _, outs, _ = model.trace_graph(training=False)
    g.set_outputs(list(zip(model.output_names(), outs)))
    if freeze_weights:
        freeze_inputs(g, {g.g.nodes[v.node]["attrs"]["name"]: var.numpy() for var, v in bound_variables(g)})
    run_pipeline("inference", g, passes=passes)
    return g


def compile_inference(model, freeze_weights=True, metadata=None, target="portable", opset=OPSET,
                      batch=None, passes=None):
    """The predict graph as an onnx.ModelProto (weights baked in unless freeze_weights=False)."""
    if not isinstance(opset, int) or not OPSET <= opset <= MAX_OPSET:
        raise ValueError(f"opset must be an integer in [{OPSET}, {MAX_OPSET}]. Received: opset={opset!r}")
    if batch is not None and (not isinstance(batch, int) or batch < 1):
        raise ValueError(f"batch must be a positive integer or None (dynamic). Received: batch={batch!r}")
    g = inference_ir(model, passes, freeze_weights)
    from kgraph.runtime.session import device
    proto = lower(g, metadata=metadata, target=target, opset=opset, device=device())
    if batch is not None:
        for vi in list(proto.graph.input) + list(proto.graph.output):
            dims = vi.type.tensor_type.shape.dim
            if dims and dims[0].dim_param == "batch":
                dims[0].dim_value = batch
    return proto


def serving_metadata(model) -> dict:
    from importlib.metadata import PackageNotFoundError, version
    try:
        v = version("kgraph")
    except PackageNotFoundError:
        v = "0"
    return {"keras_config": model.to_json(), "producer": "kgraph", "producer_version": v,
            "inputs": json.dumps(model.input_names()), "outputs": json.dumps(model.output_names())}


def save_onnx(proto, path):
    """Atomic write; models over 2 GB keep their weights in an external data file beside."""
    if proto.ByteSize() >= TWO_GB:
        folder = os.path.dirname(os.path.abspath(path))
        data_name = os.path.basename(path) + ".data"
        onnx.save_model(proto, path, save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data_name, size_threshold=1024)
        return
    atomic_write_bytes(path, proto.SerializeToString())


def export_model(model, path, target="portable", opset=OPSET, batch=None, passes=None):
    """`model.export(path)`: an ONNX inference file for serving."""
    proto = compile_inference(model, metadata=serving_metadata(model), target=target, opset=opset,
                              batch=batch, passes=passes)
    save_onnx(proto, path)
    return proto


def export_training(model, out_dir, batch_size=32):
    """Writes train_step.onnx, eval.onnx, predict.onnx, state.npz and manifest.json."""
    if not getattr(model, "compiled", False):
        raise RuntimeError("export_training needs a compiled model: call compile() first")
    os.makedirs(out_dir, exist_ok=True)
    spec = model._compiled_spec
    y_specs = [(n, t.shape, np.float32) for n, t in zip(model.output_names(), model.outputs)]
    # sparse losses take integer labels of one rank less
    ys = [np.zeros((1,) + (t.shape[1:-1] if loss is not None and "sparse" in loss.name else t.shape[1:]),
                   np.float32) for t, loss in zip(model.outputs, spec.losses)]
    train = model._runner("train", ys)
    evaluator = model._runner("eval", ys)
    state = model._state
    state.sync_to_host()
    opt = model.optimizer
    files = {"train_step": "train_step.onnx", "eval": "eval.onnx", "predict": "predict.onnx"}
    atomic_write_bytes(os.path.join(out_dir, files["train_step"]), train.step_model.SerializeToString())
    atomic_write_bytes(os.path.join(out_dir, files["eval"]), evaluator.step_model.SerializeToString())
    save_onnx(compile_inference(model, metadata=serving_metadata(model)), os.path.join(out_dir, files["predict"]))
    sig = train.sig
    arrays = {name: state.current(name) for name, _ in sig.weight_inputs + sig.slot_inputs}
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(os.path.join(out_dir, "state.npz"), buf.getvalue())
    manifest = {
        "format": "kgraph-training/1",
        "files": files,
        "state_file": "state.npz",
        "data_inputs": [{"name": n, "role": "x" if n in model.input_names() else
                         ("sample_weight" if n == "sample_weight" else "y")} for n in sig.data_inputs],
        "state_inputs": [n for n, _ in sig.weight_inputs + sig.slot_inputs],
        "scalar_inputs": {"lr": "learning rate of this step (float32 scalar)",
                          "t": "1-based step number (float32 scalar), continue from t_start"},
        "learning_rate": opt.current_learning_rate(),
        "t_start": opt.iterations + 1,
        "batch_size": batch_size,
        "outputs": {"loss": "loss",
                    "metric_partials": {metric.name: names for (_, metric), (_, names)
                                        in zip(train.metric_objs, sig.metric_outputs)}},
        "feedback": {out: inp for out, inp in sig.feedback},
        "weights": [{"input": n, "path": var.path, "trainable": any(v is var for v in model.trainable_weights)}
                    for n, var in sig.weight_inputs],
    }
    atomic_write_bytes(os.path.join(out_dir, "manifest.json"), json.dumps(manifest, indent=2).encode())
    return manifest
