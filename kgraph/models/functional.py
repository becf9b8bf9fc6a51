"""Functional `Model`: a DAG of layer calls between Input tensors and outputs.

The model compiles its DAG into IR graphs (predict, and in training eval/train-step)
and runs them through onnxruntime; it is itself a Layer, so a model can be called
on new tensors like any layer (its weights are shared).
"""
from __future__ import annotations

import numpy as np

from kgraph.engine import variable as variable_mod
from kgraph.engine.input_layer import InputLayer
from kgraph.engine.ktensor import KTensor, flatten
from kgraph.engine.layer import Layer, TraceContext, tracing
from kgraph.engine.naming import unique_name
from kgraph.ir import ops
from kgraph.ir.graph import Graph
from kgraph.models.training_api import TrainingAPI, resolve_batch_size
from kgraph.saving.api import SavingAPI


class Model(SavingAPI, TrainingAPI, Layer):
    _kind = "Model"

    def __init__(self, inputs=None, outputs=None, name=None, trainable=True, **kwargs):
        if inputs is None or outputs is None:
            raise ValueError("Model needs `inputs` and `outputs` (Functional API); subclassed "
                             "models are not supported. Received: inputs={inputs!r}, outputs={outputs!r}")
        Layer.__init__(self, name=name or unique_name("functional"), trainable=trainable, **kwargs)
        self._init_graph(inputs, outputs)
        TrainingAPI.__init__(self)

    # -- the DAG -------------------------------------------------------------
    def _init_graph(self, inputs, outputs):
        self._input_struct = inputs
        self._output_struct = outputs
        self.inputs = flatten(inputs)
        self.outputs = flatten(outputs)
        for kind, ts in (("inputs", self.inputs), ("outputs", self.outputs)):
            for t in ts:
                if not isinstance(t, KTensor):
                    raise ValueError(f"Model '{self.name}': all {kind} must be symbolic tensors "
                                     f"(from Input() or layer calls). Received: {t!r}")
        for t in self.inputs:
            if not isinstance(t._history[0], InputLayer):
                raise ValueError(f"Model '{self.name}': model inputs must come from `Input()`. "
                                 f"Received: {t!r} produced by layer '{t._history[0].name}'")
        input_ids = {id(t) for t in self.inputs}
        order, seen, visiting = [], set(), set()

        def visit(t, path):
            if id(t) in input_ids:
                return
            layer, ni, _ = t._history
            node = layer._inbound_nodes[ni]
            if isinstance(layer, InputLayer):
                raise ValueError(
                    f"Model '{self.name}': graph disconnected: output {path} depends on input "
                    f"'{layer.name}' {t.shape}, which is not among the model's inputs "
                    f"{[i.name for i in self.inputs]}")
            if id(node) in seen:
                return
            visiting.add(id(node))
            for x in node.inputs:
                visit(x, path)
            seen.add(id(node))
            order.append(node)

        for t in self.outputs:
            visit(t, t.name)
        used = {id(x) for node in order for x in node.inputs} | {id(t) for t in self.outputs}
        if not any(id(t) in used for t in self.inputs):
            raise ValueError(f"Model '{self.name}': the outputs do not depend on any of the inputs "
                             f"{[i.name for i in self.inputs]}")
        self._nodes = order
        layers = [t._history[0] for t in self.inputs]
        for node in order:
            if node.layer not in layers:
                layers.append(node.layer)
        names = [layer.name for layer in layers]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"Model '{self.name}': all layer names should be unique. "
                             f"Received duplicated names: {dup}")
        self._all_layers = layers
        self.built = True

    @property
    def layers(self):
        return list(self._all_layers)

    # Keras: a model's `input`/`output` are its own Input and output tensors (as passed to
    # the constructor), not those of a later call of the model as a layer.
    def _own_tensors(self, attr):
        if not self.built or not hasattr(self, attr + "s"):
            raise AttributeError(f"Model '{self.name}' has not yet been built and thus has no "
                                 f"defined {attr}.")
        struct = getattr(self, f"_{attr}_struct")
        return list(struct) if isinstance(struct, tuple) else struct

    @property
    def input(self):
        return self._own_tensors("input")

    @property
    def output(self):
        return self._own_tensors("output")

    def get_layer(self, name=None, index=None):
        if name is None and index is None:
            raise ValueError("Provide either a layer name or layer index at `get_layer`.")
        if index is not None:
            if not -len(self.layers) <= index < len(self.layers):
                raise ValueError(f"Was asked to retrieve layer at index {index} but model only has "
                                 f"{len(self.layers)} layers.")
            return self.layers[index]
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ValueError(f"No such layer: {name}. Existing layers are: {[l.name for l in self.layers]}.")

    @property
    def weights(self):
        return _unique(w for layer in self.layers for w in layer.weights)

    @property
    def trainable_weights(self):
        if not self.trainable:
            return []
        return _unique(w for layer in self.layers for w in layer.trainable_weights)

    @property
    def non_trainable_weights(self):
        ids = {id(w) for w in self.trainable_weights}
        return [w for w in self.weights if id(w) not in ids]

    # -- tracing into the IR -----------------------------------------------------
    def call(self, inputs, training=False):
        values = inputs if isinstance(inputs, list) else [inputs]
        if len(values) != len(self.inputs):
            raise self._error(f"expects {len(self.inputs)} inputs, received {len(values)}")
        env = {id(t): v for t, v in zip(self.inputs, values)}
        for node in self._nodes:
            args = [env[id(t)] for t in node.inputs]
            # Keras 3: a `training=` passed explicitly when the layer was called wins over
            # the mode of the run (e.g. Monte-Carlo dropout with `training=True`).
            kw_training = node.kwargs.get("training")
            out = node.layer.trace(args if node.structure == "list" else args[0],
                                   training=bool(training if kw_training is None else kw_training))
            for t, v in zip(node.outputs, flatten(out)):
                env[id(t)] = v
        outs = [env[id(t)] for t in self.outputs]
        return outs if len(outs) > 1 or isinstance(self._output_struct, (list, tuple, dict)) else outs[0]

    def input_names(self):
        return [t._history[0].name for t in self.inputs]

    def output_names(self):
        # unique, and distinct from the input names (an output that is a model input
        # would otherwise define the same ONNX name twice)
        taken = set(self.input_names())
        names = []
        for t in self.outputs:
            base = n = t._history[0].name
            k = len(names)
            while n in taken:
                n, k = f"{base}_{k}", k + 1
            taken.add(n)
            names.append(n)
        return names

    def trace_graph(self, training=False, name=None):
        """A fresh IR graph with the model's inputs, weights as inputs, and outputs.
        Returns (graph, input values, output values, trace context)."""
        g = Graph(name or self.name)
        ins = [g.add_input(n, t.shape, t.dtype) for n, t in zip(self.input_names(), self.inputs)]
        ctx = TraceContext(training)
        with ops.building(g), tracing(ctx):
            outs = flatten(self.call(list(ins), training=training))
        return g, ins, outs, ctx

    # -- inference ---------------------------------------------------------------
    def _inference_runner(self):
        from kgraph.runtime.inference import InferenceRunner
        key = variable_mod.generation()
        cached = getattr(self, "_runner_cache", None)
        if cached is None or cached[0] != key:
            self._sync_weights()
            from kgraph.export import compile_inference
            cached = (variable_mod.generation(),
                      InferenceRunner(compile_inference(self), self.input_names(), self.output_names()))
            self._runner_cache = cached
        return cached[1]

    def _sync_weights(self):
        for w in self.weights:
            if w._owner is not None:
                w._owner.sync_to_host()

    def _standardize_inputs(self, x, what="x"):
        """The input arrays as a list matched to self.inputs, shape-checked."""
        names = self.input_names()
        if isinstance(x, dict):
            missing = [n for n in names if n not in x]
            if missing:
                raise ValueError(f"Model '{self.name}': missing input(s) {missing} in `{what}`; "
                                 f"expected keys {names}. Received keys: {sorted(x)}")
            arrays = [x[n] for n in names]
        elif isinstance(x, (list, tuple)) and len(self.inputs) > 1:
            arrays = list(x)
        elif isinstance(x, (list, tuple)) and len(x) == 1 and not np.isscalar(x[0]) and np.ndim(x[0]) >= 1 \
                and np.asarray(x[0]).ndim == len(self.inputs[0].shape):
            arrays = [x[0]]
        else:
            arrays = [x]
        if len(arrays) != len(self.inputs):
            raise ValueError(f"Model '{self.name}' expects {len(self.inputs)} input(s) {names}, "
                             f"but it received {len(arrays)} input arrays")
        out = []
        for t, n, a in zip(self.inputs, names, arrays):
            a = np.asarray(a)
            if a.dtype.kind not in "biuf":
                raise ValueError(f"Model '{self.name}': input '{n}' is not a numeric array "
                                 f"(expected {t.dtype.name}, received dtype {a.dtype})")
            if a.ndim != len(t.shape) or any(e is not None and e != r for e, r in zip(t.shape[1:], a.shape[1:])):
                raise ValueError(f"Input '{n}' of model '{self.name}' is incompatible with the model: "
                                 f"expected shape={t.shape}, found shape={a.shape}")
            out.append(np.ascontiguousarray(a, dtype=t.dtype))
        n0 = out[0].shape[0]
        for n, a in zip(names, out):
            if a.shape[0] != n0:
                raise ValueError(f"Model '{self.name}': all inputs must have the same number of "
                                 f"samples. Received: {dict(zip(names, [b.shape[0] for b in out]))}")
        return out

    def _package_outputs(self, outs):
        if isinstance(self._output_struct, dict):
            return dict(zip(self._output_struct.keys(), outs))
        if isinstance(self._output_struct, (list, tuple)):
            return list(outs)
        return outs[0]

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
        batch_size = resolve_batch_size(batch_size)
        self._ensure_model_built(x)
        xs = self._standardize_inputs(x)
        runner = self._inference_runner()
        n = xs[0].shape[0]
        from kgraph.callbacks import CallbackList
        cbs = callbacks if isinstance(callbacks, CallbackList) else CallbackList(
            callbacks, add_progbar=verbose != 0, model=self, verbose=verbose, epochs=1,
            steps=max(1, -(-n // batch_size)))
        cbs.on_predict_begin()
        begin, end = cbs.wants("on_predict_batch_begin"), cbs.wants("on_predict_batch_end")
        if n <= batch_size and not (begin or end):
            outs = runner.run(xs)
        else:  # batch by batch, with Keras's per-batch hooks ({"outputs": ...} logs)
            chunks = []
            for step, i in enumerate(range(0, n, batch_size)):
                if begin:
                    cbs.on_predict_batch_begin(step)
                chunks.append(runner.run([a[i:i + batch_size] for a in xs]))
                if end:
                    cbs.on_predict_batch_end(step, {"outputs": self._package_outputs(chunks[-1])})
            outs = [np.concatenate(parts) for parts in zip(*chunks)]
        cbs.on_predict_end()
        return self._package_outputs(outs)

    def predict_on_batch(self, x):
        fast = self.__dict__.get("_fast_predict")
        if (fast is not None and type(x) is np.ndarray and fast[0] == variable_mod._GENERATION[0]
                and x.dtype == fast[1] and x.shape[1:] == fast[2] and x.flags.c_contiguous):
            # one array already in the model's dtype and shape: straight to the session
            return fast[3](fast[4], {fast[5]: x})[0]
        self._ensure_model_built(x)
        runner = self._inference_runner()
        if len(self.inputs) == 1 and len(self.outputs) == 1 and not isinstance(
                self._output_struct, (list, tuple, dict)) and None not in self.inputs[0].shape[1:]:
            t = self.inputs[0]
            self._fast_predict = (variable_mod._GENERATION[0], t.dtype, tuple(t.shape[1:]), runner._run,
                                  runner.output_names, runner.input_names[0])
        return self._package_outputs(runner.run(self._standardize_inputs(x)))

    def _ensure_model_built(self, x):
        pass

    def __call__(self, inputs, training=None, **kwargs):
        flat = flatten(inputs)
        if flat and not any(isinstance(t, KTensor) for t in flat):
            return self.predict_on_batch(inputs)
        return super().__call__(inputs, training=training, **kwargs)

    def export(self, filepath, format="onnx", target="portable", opset=None, batch=None):
        """Writes an ONNX inference file for serving (standard ONNX, weights as initializers,
        Dropout removed, the Keras config in metadata_props)."""
        from kgraph.export import OPSET, export_model
        if format != "onnx":
            raise ValueError(f"Model '{self.name}': export supports format='onnx'. Received: format={format!r}")
        return export_model(self, filepath, target=target, opset=opset or OPSET, batch=batch)

    # -- description -----------------------------------------------------------
    def summary(self, line_length=None, positions=None, print_fn=None, **kwargs):
        from kgraph.models.summary import print_summary
        print_summary(self, line_length=line_length, positions=positions, print_fn=print_fn)

    def get_config(self):
        from kgraph.models.serialization import functional_config
        return functional_config(self)

    @classmethod
    def from_config(cls, config, custom_objects=None):
        from kgraph.models.serialization import functional_from_config
        return functional_from_config(config, custom_objects)

    def to_json(self, **kwargs):
        from kgraph.models.serialization import model_to_json
        return model_to_json(self, **kwargs)


def _unique(weights):
    """Each weight once (a shared layer appears in several places), in first-seen order."""
    out, seen = [], set()
    for w in weights:
        if id(w) not in seen:
            seen.add(id(w))
            out.append(w)
    return out
