"""The Layer base class.

A layer owns weights and emits a few primitive IR ops from `call()`; it holds no
gradient code (autodiff derives that). Calling a layer on symbolic tensors builds
it, runs `call()` on a scratch IR graph for shape inference (so shape errors point
at the user's own line) and records a CallNode in the layer DAG.
"""
from __future__ import annotations

import warnings

import numpy as np

from kgraph import initializers as initializers_mod
from kgraph.engine.ktensor import CallNode, KTensor, flatten
from kgraph.engine.naming import snake_case, unique_name
from kgraph.engine.variable import Variable
from kgraph.ir import ops
from kgraph.ir.graph import Graph

_BASE_KWARGS = {"name", "trainable", "dtype", "input_shape", "batch_input_shape", "input_dim",
                "batch_size", "input_length"}


class TraceContext:
    """State of one trace into an IR graph: extra losses (activity regularizers) and
    state updates (e.g. moving statistics) that layers contribute in training mode."""

    def __init__(self, training: bool):
        self.training = training
        self.losses = []    # scalar Values added to the training loss
        self.updates = []   # (Variable, new Value) applied after the step

_TRACE: list[TraceContext] = []


def current_trace() -> TraceContext | None:
    return _TRACE[-1] if _TRACE else None


class tracing:
    def __init__(self, ctx: TraceContext):
        self.ctx = ctx

    def __enter__(self):
        _TRACE.append(self.ctx)
        return self.ctx

    def __exit__(self, *exc):
        _TRACE.pop()


_DEFERRED_INIT = [0]


class deferred_initializers:
    """Inside this block `add_weight` leaves initializers pending (see Variable): a model
    rebuilt only to receive a file's values skips computing values it will replace. A
    weight that is read before it receives one is initialised then, as usual."""

    def __enter__(self):
        _DEFERRED_INIT[0] += 1
        return self

    def __exit__(self, *exc):
        _DEFERRED_INIT[0] -= 1


class Layer:
    _kind = "Layer"   # how error messages name this object ("Model" for models)
    def __init__(self, name=None, trainable=True, dtype=None, activity_regularizer=None, **kwargs):
        unknown = set(kwargs) - _BASE_KWARGS
        if unknown:
            raise TypeError(f"Unrecognized keyword arguments passed to {type(self).__name__}: "
                            f"{sorted(unknown)}")
        self.name = name or unique_name(snake_case(type(self).__name__))
        self.trainable = trainable
        self.dtype = np.dtype(dtype or "float32")
        self.built = False
        self._weights: list[Variable] = []
        self._inbound_nodes: list[CallNode] = []
        from kgraph import regularizers
        self.activity_regularizer = regularizers.get(activity_regularizer)
        # Keras 2 spelling kept for old tutorials: `Dense(64, input_shape=(784,))`.
        self._input_shape_arg = None
        if "input_shape" in kwargs or "input_dim" in kwargs or "batch_input_shape" in kwargs:
            if "batch_input_shape" in kwargs:
                shape = tuple(kwargs["batch_input_shape"])[1:]
            elif "input_shape" in kwargs:
                shape = tuple(kwargs["input_shape"])
            else:
                shape = (kwargs["input_dim"],)
            warnings.warn(f"Do not pass an `input_shape`/`input_dim` argument to a layer "
                          f"({type(self).__name__} '{self.name}'). When using Sequential models, "
                          f"prefer using an `Input(shape)` object as the first layer in the model "
                          f"instead.", UserWarning, stacklevel=3)
            self._input_shape_arg = shape

    # -- weights -------------------------------------------------------------
    def add_weight(self, shape, initializer="glorot_uniform", name=None, trainable=True,
                   regularizer=None, dtype=None):
        from kgraph import regularizers
        init = initializers_mod.get(initializer)
        dtype = np.dtype(dtype or self.dtype)
        shape = tuple(shape)
        if _DEFERRED_INIT[0]:
            value, pending = None, (init, shape, dtype)
        else:
            value, pending = np.asarray(init(shape, dtype), dtype=dtype), None
        var = Variable(value, name=name, path=f"{self.name}/{name}", trainable=trainable,
                       regularizer=regularizers.get(regularizer), pending=pending)
        self._weights.append(var)
        return var

    @property
    def weights(self):
        return list(self._weights)

    @property
    def trainable_weights(self):
        return [w for w in self.weights if w.trainable and self.trainable]

    @property
    def non_trainable_weights(self):
        return [w for w in self.weights if not (w.trainable and self.trainable)]

    def get_weights(self):
        return [w.numpy().copy() for w in self.weights]

    def set_weights(self, weights):
        """Checks every array before assigning any, so a bad list changes nothing."""
        mine = self.weights
        if len(weights) != len(mine):
            raise ValueError(f"{self._kind} '{self.name}' expects {len(mine)} weight arrays, "
                             f"received {len(weights)}")
        for w, v in zip(mine, weights):
            if tuple(np.shape(v)) != w.shape:
                raise ValueError(f"{self._kind} '{self.name}': weight '{w.path}' has shape {w.shape}, "
                                 f"received shape {tuple(np.shape(v))}")
        for w, v in zip(mine, weights):
            w.assign(v)

    def count_params(self):
        return int(sum(np.prod(w.shape, dtype=np.int64) for w in self.weights))

    # -- to be overridden ----------------------------------------------------
    def build(self, input_shape):
        pass

    def call(self, inputs, training=False):
        raise NotImplementedError(f"{type(self).__name__} must implement call()")

    def get_config(self):
        cfg = {"name": self.name, "trainable": self.trainable, "dtype": self.dtype.name}
        if self.activity_regularizer is not None:
            from kgraph import regularizers
            cfg["activity_regularizer"] = regularizers.serialize(self.activity_regularizer)
        return cfg

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    # -- calling ------------------------------------------------------------
    def _error(self, msg):
        return ValueError(f"{type(self).__name__} '{self.name}': {msg}")

    def _ensure_built(self, shapes):
        if not self.built:
            self.build(shapes)
            self.built = True

    def __call__(self, inputs, training=None, **kwargs):
        flat = flatten(inputs)
        if all(isinstance(t, KTensor) for t in flat):
            return self._symbolic_call(inputs, flat, training, kwargs)
        if any(isinstance(t, KTensor) for t in flat):
            raise self._error("inputs mix symbolic tensors and concrete arrays")
        return self._eager_call(inputs, flat, training)

    def _symbolic_call(self, inputs, flat, training, kwargs):
        structured = isinstance(inputs, (list, tuple))
        shapes = [t.shape for t in flat]
        self._ensure_built(shapes if structured else shapes[0])
        # Shape inference: run call() once on a scratch graph.
        g = Graph(f"{self.name}_shape")
        vals = [g.add_input(f"in{i}", t.shape, t.dtype) for i, t in enumerate(flat)]
        with ops.building(g), tracing(TraceContext(training=bool(training))):
            out = self.call(list(vals) if structured else vals[0], training=bool(training))
        out_flat = flatten(out)
        node_index = len(self._inbound_nodes)
        outputs = [KTensor(v.shape, v.dtype, name=f"{self.name}/out{i}" if i else self.name,
                           history=(self, node_index, i)) for i, v in enumerate(out_flat)]
        self._inbound_nodes.append(CallNode(self, flat, outputs, "list" if structured else "single",
                                            {"training": training} if training is not None else {}))
        if isinstance(out, (list, tuple)):
            return list(outputs)
        return outputs[0]

    def trace(self, inputs, training):
        """call() inside a real trace: adds the activity regularizer's penalty, divided by
        the batch size as Keras 3 does."""
        out = self.call(inputs, training=training)
        ctx = current_trace()
        if self.activity_regularizer is not None and ctx is not None and ctx.training:
            for v in flatten(out):
                penalty = self.activity_regularizer(v)
                ctx.losses.append(penalty / ops.numel(v, axes=[0]))
        return out

    def _eager_call(self, inputs, flat, training):
        """`layer(numpy_array)`: a one-layer model compiled and run by onnxruntime."""
        from kgraph.engine.input_layer import Input
        from kgraph.models.functional import Model
        arrays = [np.asarray(a, dtype=np.float32 if np.asarray(a).dtype.kind == "f" else None)
                  for a in flat]
        sym = [Input(batch_shape=(None,) + a.shape[1:], dtype=a.dtype) for a in arrays]
        structured = isinstance(inputs, (list, tuple))
        out = self(sym if structured else sym[0])
        model = Model(sym, out)
        return model.predict_on_batch(arrays if structured else arrays[0])

    # -- introspection ---------------------------------------------------------
    def _node_tensors(self, attr):
        if not self._inbound_nodes:
            raise AttributeError(f"Layer '{self.name}' has never been called and thus has no "
                                 f"defined {attr}.")
        ts = getattr(self._inbound_nodes[0], attr + "s")
        return ts[0] if len(ts) == 1 else ts

    @property
    def input(self):
        return self._node_tensors("input")

    @property
    def output(self):
        return self._node_tensors("output")

    @property
    def output_shape(self):
        out = self.output
        return [t.shape for t in out] if isinstance(out, list) else out.shape

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name}, built={self.built}>"
