"""Recurrent layers: SimpleRNN, LSTM, GRU and the Bidirectional wrapper, with Keras 3
weights (names, shapes, gate order), formulas, defaults and masking.

Time is unrolled: the sequence length is static and every step is a handful of IR ops,
so autodiff derives backpropagation through time from the unrolled graph. The input
projection of all steps is one matmul before the loop, cut into per-step pieces by one
`split`; the per-step outputs are joined by one `concat` (their gradients are one concat
and T slices, never T zero-padded copies of the whole sequence). A zero initial state is
not materialised: the first step skips the terms it would zero out.
In training graphs an LSTM with Keras's default activations, no mask and no recurrent
dropout is instead one `lstm_sequence` op with a hand-written backward pass (fewer,
cache-friendly nodes than autodiff of the unrolled cell; kgraph/ir/ops/recurrence.py).

Calling conventions. Public: `layer(x)`, `layer(x, initial_state=[h, c])`,
`layer([x, h, c])` and `layer(x, mask=m)`. A call is recorded in the layer DAG with one
flat input list, `[mask_source, x, *states]` when masked and `[x, *states]` otherwise;
`_unpack` tells them apart by rank (x is 3-D, a mask source 2-D and listed before x), so
the same rule reads shapes, symbolic tensors, arrays and IR Values, and a saved config
replays the call unchanged.

Masking. A mask source is a (batch, T) tensor whose zeros (False) mark padded steps.
Without an explicit `mask=`, it is found by walking the layer DAG back from x: the ids
fed to an `Embedding(mask_zero=True)`, through the layers that Keras lets pass a mask
(Dense, Dropout, activations, ...) and through recurrent layers that return sequences.
As in Keras 3 (checked against 3.15), that implicit mask is not applied to a call that
also passes initial states (a call with several tensor arguments gets no automatic
mask there); an explicit `mask=` always is.
At a masked step the states keep their previous values and the step's output is the
kept state, or zeros with `zero_output_for_mask=True` (as Keras's RNN loop; Bidirectional
sets it when it returns sequences). Losses are not masked: Keras also drops masked
timesteps from a loss on sequence outputs, which kgraph's training graph does not do.

Dropout (training only), as Keras: `dropout` masks the inputs and `recurrent_dropout` the
previous output where it enters the recurrent matmul; each mask is drawn once per
sequence and reused at every step, one per gate when Keras would use implementation 1
(any recurrent dropout), else one for all gates.
"""
from __future__ import annotations

import numpy as np

from kgraph import activations, initializers, regularizers, utils
from kgraph.engine.ktensor import KTensor
from kgraph.engine.layer import Layer
from kgraph.ir import ops

# Training graphs run an LSTM with Keras's default activations, no mask and no recurrent
# dropout as one fused op whose gradient is hand-written (kgraph/ir/ops/recurrence.py;
# ~10% faster train steps than autodiff of the unrolled cell). Inference graphs keep the
# unrolled cell: the fused op only pays off through its backward pass. False: always
# unrolled.
FUSED_SEQUENCE = True

# Single-input layers through which Keras 3 propagates a timestep mask unchanged.
_MASK_PASSTHROUGH = {"Dense", "Dropout", "Activation", "Identity", "ReLU", "LeakyReLU", "PReLU",
                     "ELU", "Softmax", "BatchNormalization", "LayerNormalization", "GaussianNoise",
                     "GaussianDropout", "AlphaDropout", "ActivityRegularization"}


def _rank(item):
    return len(item) if isinstance(item, tuple) else len(item.shape)


def _unpack(items):
    """(mask source or None, x, [states]) from a flat call list (shapes, tensors or Values)."""
    items = list(items)
    src = None
    if len(items) >= 2 and _rank(items[0]) == 2 and _rank(items[1]) == 3:
        src, items = items[0], items[1:]
    return src, items[0], items[1:]


def mask_source(t):
    """The (batch, T) tensor whose zeros mark the padded steps of the sequence `t`, or None."""
    while isinstance(t, KTensor) and t._history is not None:
        layer, ni, ti = t._history
        if not layer._inbound_nodes or ni >= len(layer._inbound_nodes):
            return None
        node = layer._inbound_nodes[ni]
        kind = type(layer).__name__
        if kind == "Embedding":
            return node.inputs[0] if getattr(layer, "mask_zero", False) else None
        if isinstance(layer, _SequenceLayer):
            sequences = 2 if getattr(layer, "merge_mode", "") is None else 1
            if not layer.return_sequences or ti >= sequences:
                return None
            src, x, _ = _unpack(node.inputs)
            if src is not None:
                return src
            t = x
            continue
        if kind in _MASK_PASSTHROUGH and len(node.inputs) == 1 \
                and tuple(node.inputs[0].shape[:2]) == tuple(t.shape[:2]):
            t = node.inputs[0]
            continue
        return None
    return None


# ---- per-step helpers: None stands for a zero tensor (the default initial state) -------
def _plus(a, b):
    return a if b is None else a + b


def _zero(like):
    return like.graph.const(np.zeros((), like.dtype))


def _keep(masked, old, new):
    """`old` where the step is masked (old None = zeros), else `new`."""
    return ops.where(masked, _zero(new) if old is None else old, new)


def _masked_steps(src, steps):
    """T bool Values (batch, 1): True where step t is padding (the source is 0 / False)."""
    (src,) = ops.coerce(src)
    masked = ops.equal(src, _zero(src))
    return ops.split(masked, steps, axis=1)


def _rec_matmul(h, kernel, masks):
    """h @ kernel; with recurrent dropout, gate block k of the kernel reads h * masks[k]."""
    if not masks:
        return ops.matmul(h, kernel)
    if len(masks) == 1:
        return ops.matmul(h * masks[0], kernel)
    parts = ops.split(kernel, len(masks), axis=1)
    return ops.concat([ops.matmul(h * m, k) for m, k in zip(masks, parts)], axis=1)


class _Steps(list):
    """Per-step outputs of a fused recurrence, with `stacked` (batch, T*u) the same values
    already joined, so that stacking them again costs nothing."""

    def __init__(self, steps, stacked):
        super().__init__(steps)
        self.stacked = stacked


def _stack(outputs, units):
    """Per-step (batch, u) Values -> one (batch, T, u) sequence."""
    if isinstance(outputs, _Steps):
        return ops.reshape(outputs.stacked, (0, len(outputs), units))
    seq = ops.concat(outputs, axis=1) if len(outputs) > 1 else outputs[0]
    return ops.reshape(seq, (0, len(outputs), units))


class _SequenceLayer(Layer):
    """What SimpleRNN, LSTM, GRU and Bidirectional share: call forms, checks, masking."""

    def __call__(self, inputs, initial_state=None, mask=None, training=None, **kwargs):
        if kwargs:
            raise TypeError(f"{type(self).__name__} '{self.name}' got unexpected keyword "
                            f"arguments {sorted(kwargs)}")
        if isinstance(inputs, (list, tuple)) and not all(hasattr(i, "shape") for i in inputs):
            inputs = np.asarray(inputs, np.float32)
        src, x, states = _unpack(inputs if isinstance(inputs, (list, tuple)) else [inputs])
        if initial_state is not None:
            if states:
                raise self._error(f"received initial states both in `inputs` and as "
                                  f"`initial_state`. Received: initial_state={initial_state!r}")
            states = list(initial_state) if isinstance(initial_state, (list, tuple)) else [initial_state]
        if mask is not None:
            src = mask
        elif src is None and not states and isinstance(x, KTensor):
            src = mask_source(x)
        self._check_call(x, states, src)
        flat = ([src] if src is not None else []) + [x] + list(states)
        return super().__call__(flat if len(flat) > 1 else x, training=training)

    def _check_call(self, x, states, src):
        shape = tuple(x.shape)
        if len(shape) != 3:
            raise self._error(f"expects a 3D input (batch, timesteps, features). "
                              f"Received: input_shape={shape}")
        if shape[1] is None or shape[2] is None:
            raise self._error(f"needs a static number of timesteps and features (the time "
                              f"loop is unrolled). Received: input_shape={shape}")
        if not np.issubdtype(np.dtype(x.dtype), np.floating):
            raise self._error(f"expects floating-point sequences; integer ids need an Embedding "
                              f"first. Received: dtype={np.dtype(x.dtype).name}")
        units, n = self._state_units(), self._n_states()
        if states and len(states) != n:
            raise self._error(f"expects {n} initial state tensor(s), each of shape (batch, {units}). "
                              f"Received: {len(states)} initial state tensor(s)")
        for i, s in enumerate(states):
            if len(s.shape) != 2 or s.shape[1] != units:
                raise self._error(f"initial state {i} must have shape (batch, {units}). "
                                  f"Received: shape={tuple(s.shape)}")
        if src is not None and (len(src.shape) != 2 or src.shape[1] not in (None, shape[1])):
            raise self._error(f"expects a mask of shape (batch, {shape[1]}). "
                              f"Received: mask shape={tuple(src.shape)}")

    def _x_shape(self, input_shape):
        shapes = input_shape if isinstance(input_shape, list) else [tuple(input_shape)]
        x_shape = tuple(_unpack([tuple(s) for s in shapes])[1])
        if len(x_shape) != 3 or x_shape[-1] is None:
            raise self._error(f"expects a 3D input (batch, timesteps, features) with a defined "
                              f"feature size. Received: input_shape={x_shape}")
        return x_shape


class _Recurrent(_SequenceLayer):
    """One recurrent layer: weights, the unrolled loop, Keras config. Subclasses give the
    cell: `_gates` (G = gates * units), `_n_states`, `_prepare` and `_cell`."""

    _gates = 1
    _cell_name = "cell"

    def __init__(self, units, activation="tanh", use_bias=True, kernel_initializer="glorot_uniform",
                 recurrent_initializer="orthogonal", bias_initializer="zeros",
                 kernel_regularizer=None, recurrent_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, kernel_constraint=None, recurrent_constraint=None,
                 bias_constraint=None, dropout=0.0, recurrent_dropout=0.0, seed=None,
                 return_sequences=False, return_state=False, go_backwards=False, stateful=False,
                 unroll=False, zero_output_for_mask=False, **kwargs):
        implementation = kwargs.pop("implementation", 2)  # Keras: how many dropout masks
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        kind = f"{type(self).__name__} '{self.name}'"
        if not isinstance(units, (int, np.integer)) or units <= 0:
            raise ValueError(f"{kind} expects `units` to be a positive integer. Received: units={units!r}")
        for arg, v in (("dropout", dropout), ("recurrent_dropout", recurrent_dropout)):
            if not isinstance(v, (int, float)) or not 0 <= v < 1:
                raise ValueError(f"{kind}: `{arg}` must be a float in [0, 1). Received: {arg}={v!r}")
        for arg, v in (("kernel_constraint", kernel_constraint), ("bias_constraint", bias_constraint),
                       ("recurrent_constraint", recurrent_constraint)):
            if v is not None:
                raise ValueError(f"{kind}: weight constraints are not supported. Received: {arg}={v!r}")
        if stateful:
            raise ValueError(f"{kind}: `stateful=True` is not supported (states are not carried "
                             f"between batches). Received: stateful={stateful!r}")
        self.units = int(units)
        try:
            self.activation = activations.get(activation)
        except ValueError as e:
            raise ValueError(f"{kind}: {e}") from None
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.recurrent_initializer = initializers.get(recurrent_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.recurrent_regularizer = regularizers.get(recurrent_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.dropout, self.recurrent_dropout, self.seed = float(dropout), float(recurrent_dropout), seed
        # Keras switches to implementation 1 (one mask per gate) for recurrent dropout
        self._implementation = 1 if recurrent_dropout or implementation == 1 else 2
        self._graph_seed = seed if seed is not None else utils.next_seed()
        self.return_sequences, self.return_state = bool(return_sequences), bool(return_state)
        self.go_backwards, self.stateful, self.unroll = bool(go_backwards), False, bool(unroll)
        self.zero_output_for_mask = bool(zero_output_for_mask)
        self._path_prefix = ""  # set by a Bidirectional wrapper: Keras paths nest its name

    def _n_states(self):
        return 1

    def _state_units(self):
        return self.units

    # -- weights ---------------------------------------------------------------
    def _bias_shape(self):
        return (self._gates * self.units,)

    def _bias_init(self):
        return self.bias_initializer

    def _weight(self, shape, init, name, reg):
        w = self.add_weight(shape, init, name, regularizer=reg)
        # (a Variable keeps its value C-ordered, which the runtime's shared buffers need,
        # also for the orthogonal initializer's transposed result)
        w.path = f"{self._path_prefix}{self.name}/{self._cell_name}/{name}"
        return w

    def build(self, input_shape):
        self.input_dim = self._x_shape(input_shape)[-1]
        g = self._gates * self.units
        self.kernel = self._weight((self.input_dim, g), self.kernel_initializer, "kernel",
                                   self.kernel_regularizer)
        self.recurrent_kernel = self._weight((self.units, g), self.recurrent_initializer,
                                             "recurrent_kernel", self.recurrent_regularizer)
        self.bias = self._weight(self._bias_shape(), self._bias_init(), "bias",
                                 self.bias_regularizer) if self.use_bias else None
        self.built = True

    # -- the loop ----------------------------------------------------------------
    def _prepare(self):
        """Per-trace values: (input kernel, input bias, what the cell reads every step)."""
        return self.kernel, self.bias, None

    def _dropout_masks(self, x, size, rate, first_seed):
        """Keras's RNN dropout: scaled keep-masks (batch, size) drawn once per sequence and
        used at every step; one per gate with implementation 1, else one."""
        count = self._gates if self._implementation == 1 else 1
        corner = ops.reshape(ops.slice_(x, (1, 2), (0, 0), (1, 1)), (0, 1))
        ones = ops.expand(ops.zeros_like(corner) + 1.0, (1, size))
        # Built from Dropout's boolean mask output: onnxruntime's optimizer deletes a Dropout
        # whose mask nobody reads, even in training mode.
        keeps = [ops.dropout(ones, rate, self._graph_seed + first_seed + k)[1] for k in range(count)]
        return [ops.cast(keep, x.dtype) * (1.0 / (1.0 - rate)) for keep in keeps]

    @staticmethod
    def _step_inputs(x, kernel, in_bias, masks=None):
        """x (batch, T, F) -> T pieces (batch, G) of x @ kernel + bias, in time order;
        with input dropout masks (one, or one per gate), x is masked first."""
        _, steps, features = x.shape
        if masks is None:
            proj = ops.matmul(ops.reshape(x, (-1, features)), kernel)
        else:
            flat = [ops.reshape(x * ops.unsqueeze(m, 1), (-1, features)) for m in masks]
            parts = ops.split(kernel, len(masks), axis=1)
            proj = ops.concat([ops.matmul(v, k) for v, k in zip(flat, parts)], axis=1) \
                if len(masks) > 1 else ops.matmul(flat[0], kernel)
        if in_bias is not None:
            proj = proj + in_bias
        proj = ops.reshape(proj, (-1, steps * proj.shape[-1]))
        return ops.split(proj, steps, axis=1)

    def _sequence(self, x, states, src, training=False):
        """Runs the recurrence: per-step outputs in processing order and the final states."""
        if x.shape[-1] != self.input_dim:
            raise self._error(f"expects inputs with last dimension {self.input_dim}. "
                              f"Received: input_shape={x.shape}")
        steps = x.shape[1]
        kernel, in_bias, extra = self._prepare()
        in_masks = self._dropout_masks(x, self.input_dim, self.dropout, 0) \
            if training and self.dropout else None
        rec_masks = self._dropout_masks(x, self.units, self.recurrent_dropout, self._gates) \
            if training and self.recurrent_dropout else None
        if training and src is None and rec_masks is None and (in_masks is None or len(in_masks) == 1) \
                and FUSED_SEQUENCE and self._fusable():
            if in_masks is not None:
                x = x * ops.unsqueeze(in_masks[0], 1)
            return self._fused_sequence(x, kernel, in_bias, extra, states)
        pieces = self._step_inputs(x, kernel, in_bias, in_masks)
        masked = _masked_steps(src, steps) if src is not None else [None] * steps
        states = list(states) if states else [None] * self._n_states()
        outputs = []
        for t in (reversed(range(steps)) if self.go_backwards else range(steps)):
            out, new = self._cell(pieces[t], states, extra, rec_masks)
            if masked[t] is not None:
                new = [_keep(masked[t], old, n) for old, n in zip(states, new)]
                out = _keep(masked[t], None, out) if self.zero_output_for_mask else new[0]
            states = new
            outputs.append(out)
        return outputs, states

    def _fusable(self):
        return False

    def call(self, inputs, training=False):
        src, x, states = _unpack(inputs if isinstance(inputs, list) else [inputs])
        outputs, states = self._sequence(x, states, src, training)
        y = _stack(outputs, self.units) if self.return_sequences else outputs[-1]
        return [y, *states] if self.return_state else y

    # -- config ------------------------------------------------------------------
    def _cell_config(self):
        return {}

    def get_config(self):
        reg = lambda r: r and regularizers.serialize(r)  # noqa: E731
        return {**super().get_config(), "return_sequences": self.return_sequences,
                "return_state": self.return_state, "go_backwards": self.go_backwards,
                "stateful": self.stateful, "unroll": self.unroll,
                "zero_output_for_mask": self.zero_output_for_mask, "units": self.units,
                "activation": activations.serialize(self.activation),
                **self._cell_config(),
                "kernel_initializer": initializers.serialize(self.kernel_initializer),
                "recurrent_initializer": initializers.serialize(self.recurrent_initializer),
                "bias_initializer": initializers.serialize(self.bias_initializer),
                **({"unit_forget_bias": self.unit_forget_bias} if hasattr(self, "unit_forget_bias") else {}),
                "kernel_regularizer": reg(self.kernel_regularizer),
                "recurrent_regularizer": reg(self.recurrent_regularizer),
                "bias_regularizer": reg(self.bias_regularizer),
                "activity_regularizer": reg(self.activity_regularizer),
                "kernel_constraint": None, "recurrent_constraint": None, "bias_constraint": None,
                "dropout": self.dropout, "recurrent_dropout": self.recurrent_dropout,
                **({"reset_after": self.reset_after} if hasattr(self, "reset_after") else {}),
                "seed": self.seed}


def _recurrent_activation(layer, value):
    try:
        return activations.get(value)
    except ValueError as e:
        raise ValueError(f"{type(layer).__name__} '{layer.name}': {e}") from None


class SimpleRNN(_Recurrent):
    """h_t = activation(x_t @ kernel + h_{t-1} @ recurrent_kernel + bias)."""

    _cell_name = "simple_rnn_cell"

    def _prepare(self):
        return self.kernel, self.bias, self.recurrent_kernel

    def _cell(self, xz, states, recurrent_kernel, rec_masks):
        (h,) = states
        h_new = self.activation(_plus(xz, None if h is None else _rec_matmul(h, recurrent_kernel, rec_masks)))
        return h_new, [h_new]

    def _cell_config(self):
        return {"use_bias": self.use_bias}

    def get_config(self):
        cfg = super().get_config()
        del cfg["seed"]  # Keras 3's SimpleRNN config has no seed
        return cfg


class LSTM(_Recurrent):
    """Gates i, f, c, o side by side in kernel (in, 4u), recurrent_kernel (u, 4u), bias (4u,):
    z = x W + h U + b;  c' = σ(z_f) c + σ(z_i) tanh(z_c);  h' = σ(z_o) tanh(c')."""

    _gates = 4
    _cell_name = "lstm_cell"

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid",
                 unit_forget_bias=True, use_cudnn="auto", **kwargs):
        super().__init__(units, activation=activation, **kwargs)
        self.recurrent_activation = _recurrent_activation(self, recurrent_activation)
        self.unit_forget_bias = bool(unit_forget_bias)
        self.use_cudnn = use_cudnn

    def _n_states(self):
        return 2

    def _bias_init(self):
        if not self.unit_forget_bias:
            return self.bias_initializer
        base, u = self.bias_initializer, self.units

        def forget_ones(shape, dtype="float32"):  # Keras: [init(u), ones(u), init(2u)]
            return np.concatenate([base((u,), dtype), np.ones((u,), dtype), base((2 * u,), dtype)])
        return forget_ones

    def _one_sigmoid(self):
        return self.activation is activations.tanh and self.recurrent_activation is activations.sigmoid

    def _prepare(self):
        """With Keras's default activations the four gates take one Sigmoid per step:
        tanh(z) = 2σ(2z) - 1, so the c-gate columns of the weights are scaled by 2 once per
        graph (fewer nodes forward and backward; equal to tanh within float rounding)."""
        if not self._one_sigmoid():
            return self.kernel, self.bias, self.recurrent_kernel
        u = self.units
        scale = np.concatenate([np.ones(2 * u), np.full(u, 2.0), np.ones(u)]).astype(self.dtype)
        bias = None if self.bias is None else ops.mul(self.bias, scale)
        return ops.mul(self.kernel, scale), bias, ops.mul(self.recurrent_kernel, scale)

    def _cell(self, xz, states, recurrent_kernel, rec_masks):
        h, c = states
        z = _plus(xz, None if h is None else _rec_matmul(h, recurrent_kernel, rec_masks))
        if self._one_sigmoid():
            i, f, g, o = ops.split(ops.sigmoid(z), 4, axis=1)
            g = g * 2.0 - 1.0
        else:
            i, f, g, o = ops.split(z, 4, axis=1)
            i, f, g, o = (self.recurrent_activation(i), self.recurrent_activation(f),
                          self.activation(g), self.recurrent_activation(o))
        ig = i * g
        c_new = ig if c is None else f * c + ig
        h_new = o * self.activation(c_new)
        return h_new, [h_new, c_new]

    def _cell_config(self):
        return {"recurrent_activation": activations.serialize(self.recurrent_activation),
                "use_bias": self.use_bias}

    def _fusable(self):
        return self._one_sigmoid()

    def _fused_sequence(self, x, kernel, bias, recurrent_kernel, states):
        """The whole recurrence as one `lstm_sequence` op (kgraph/ir/ops/recurrence.py) on
        the stacked kernel [W; R; b]: its gradient is written once with few nodes."""
        _, steps, features = x.shape
        parts = [kernel, recurrent_kernel] + ([] if bias is None else [ops.reshape(bias, (1, -1))])
        h0, c0 = states if states else (None, None)
        outs = ops.lstm_sequence(ops.reshape(x, (-1, steps * features)), ops.concat(parts, axis=0), h0, c0,
                                 steps=steps, bias=bias is not None, reverse=self.go_backwards,
                                 sequences=self.return_sequences)
        h_last, c_last = outs[0], outs[1]
        if self.return_sequences:
            seq = outs[2]
            outputs = _Steps(ops.split(seq, steps, axis=1)[:-1] + (h_last,), seq)
        else:
            outputs = [None] * (steps - 1) + [h_last]
        return outputs, [h_last, c_last]


class GRU(_Recurrent):
    """Gates z, r, h in kernel (in, 3u), recurrent_kernel (u, 3u). reset_after=True (Keras 3's
    default): bias (2, 3u) = [input bias; recurrent bias] and
      z, r = σ(x W_zr + b_zr + h U_zr + b'_zr);  ĥ = tanh(x W_h + b_h + r (h U_h + b'_h));
      h' = z h + (1 - z) ĥ.
    The recurrent z, r biases only add, so they are folded into the input projection.
    reset_after=False: bias (3u,) and ĥ = tanh(x W_h + b_h + (r h) U_h)."""

    _gates = 3
    _cell_name = "gru_cell"

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", reset_after=True,
                 use_cudnn="auto", **kwargs):
        super().__init__(units, activation=activation, **kwargs)
        self.recurrent_activation = _recurrent_activation(self, recurrent_activation)
        self.reset_after = bool(reset_after)
        self.use_cudnn = use_cudnn

    def _bias_shape(self):
        return (2, 3 * self.units) if self.reset_after else (3 * self.units,)

    def _prepare(self):
        u = self.units
        if not self.reset_after:
            return self.kernel, self.bias, ops.split(self.recurrent_kernel, (2 * u, u), axis=1)
        if self.bias is None:
            return self.kernel, None, None
        b_in, b_rec = (ops.reshape(b, (3 * u,)) for b in ops.split(self.bias, 2, axis=0))
        zr_only = np.concatenate([np.ones(2 * u), np.zeros(u)]).astype(b_rec.dtype)
        rec_h_bias = ops.split(b_rec, (2 * u, u), axis=0)[1]
        return self.kernel, b_in + b_rec * zr_only, rec_h_bias

    def _cell(self, xz, states, extra, rec_masks):
        (h,) = states
        u, act, rec = self.units, self.activation, self.recurrent_activation
        x_zr, x_h = ops.split(xz, (2 * u, u), axis=1)
        if self.reset_after:
            if h is None:
                zr, rec_h = x_zr, extra
            else:
                h_zr, h_h = ops.split(_rec_matmul(h, self.recurrent_kernel, rec_masks), (2 * u, u), axis=1)
                zr, rec_h = x_zr + h_zr, _plus(h_h, extra)
            z, r = ops.split(rec(zr), 2, axis=1)
            hh = act(x_h if rec_h is None else x_h + r * rec_h)
        else:
            k_zr, k_h = extra
            zr = x_zr if h is None else x_zr + _rec_matmul(h, k_zr, rec_masks and rec_masks[:2])
            z, r = ops.split(rec(zr), 2, axis=1)
            h_h = h if not rec_masks else h * rec_masks[-1]
            hh = act(x_h if h is None else x_h + ops.matmul(r * h_h, k_h))
        h_new = (1.0 - z) * hh if h is None else hh + z * (h - hh)
        return h_new, [h_new]

    def _cell_config(self):
        return {"recurrent_activation": activations.serialize(self.recurrent_activation),
                "use_bias": self.use_bias}


_MERGE_MODES = ("concat", "sum", "mul", "ave", None)


class Bidirectional(_SequenceLayer):
    """A forward and a backward copy of a recurrent layer over the same sequence; the
    backward outputs are flipped back into time order before merging (concat, sum, mul,
    ave, or None for both as a list). Weights: the forward layer's, then the backward's.
    Initial states: the forward layer's, then the backward layer's."""

    def __init__(self, layer, merge_mode="concat", weights=None, backward_layer=None, **kwargs):
        if not isinstance(layer, _Recurrent):
            raise ValueError(f"Please initialize `Bidirectional` layer with a recurrent layer "
                             f"(SimpleRNN, LSTM or GRU). Received: layer={layer!r}")
        if backward_layer is not None and not isinstance(backward_layer, _Recurrent):
            raise ValueError(f"`backward_layer` needs to be a recurrent layer (SimpleRNN, LSTM or "
                             f"GRU). Received: backward_layer={backward_layer!r}")
        if merge_mode not in _MERGE_MODES:
            raise ValueError(f"Invalid merge mode. Merge mode should be one of "
                             f'{{"sum", "mul", "ave", "concat", None}}. Received: merge_mode={merge_mode!r}')
        super().__init__(**kwargs)
        self.forward_layer = self._copy(layer, "forward_")
        if backward_layer is None:
            self.backward_layer = self._copy(layer, "backward_", go_backwards=True)
        else:
            self.backward_layer = backward_layer
        fw, bw = self.forward_layer, self.backward_layer
        if fw.go_backwards == bw.go_backwards:
            raise ValueError(f"Bidirectional '{self.name}': forward layer and backward layer "
                             f"should have different `go_backwards` values. Received: "
                             f"forward_layer.go_backwards={fw.go_backwards}, "
                             f"backward_layer.go_backwards={bw.go_backwards}")
        for attr in ("return_sequences", "return_state"):
            if getattr(fw, attr) != getattr(bw, attr):
                raise ValueError(f"Bidirectional '{self.name}': forward layer and backward layer "
                                 f"are expected to have the same value for `{attr}`. Received: "
                                 f"{getattr(fw, attr)} and {getattr(bw, attr)}")
        for inner in (fw, bw):  # Keras: padded steps of a returned sequence read as zeros
            inner.zero_output_for_mask = inner.return_sequences
        self.merge_mode = merge_mode
        self.return_sequences, self.return_state = fw.return_sequences, fw.return_state
        self._initial_weights = weights

    @staticmethod
    def _copy(layer, prefix, **overrides):
        cfg = {**layer.get_config(), **overrides}
        base = layer.name[len(prefix):] if layer.name.startswith(prefix) else layer.name
        cfg["name"] = prefix + base
        return type(layer).from_config(cfg)

    def _n_states(self):
        return self.forward_layer._n_states() + self.backward_layer._n_states()

    def _state_units(self):
        return self.forward_layer.units

    def _check_call(self, x, states, src):
        super()._check_call(x, states, src)
        if self.forward_layer.units != self.backward_layer.units and states:
            raise self._error(f"initial states need forward and backward layers with equal units. "
                              f"Received: units={self.forward_layer.units} and {self.backward_layer.units}")

    # -- weights ---------------------------------------------------------------
    def build(self, input_shape):
        x_shape = self._x_shape(input_shape)
        for inner in (self.forward_layer, self.backward_layer):
            inner._path_prefix = f"{self.name}/"
            if not inner.built:
                inner.build(x_shape)
        if self._initial_weights is not None:
            self.set_weights(self._initial_weights)
            self._initial_weights = None
        self.built = True

    @property
    def weights(self):
        return self.forward_layer.weights + self.backward_layer.weights

    @property
    def trainable_weights(self):
        if not self.trainable:
            return []
        return self.forward_layer.trainable_weights + self.backward_layer.trainable_weights

    @property
    def non_trainable_weights(self):
        ids = {id(w) for w in self.trainable_weights}
        return [w for w in self.weights if id(w) not in ids]

    # -- the two loops -------------------------------------------------------------
    def call(self, inputs, training=False):
        src, x, states = _unpack(inputs if isinstance(inputs, list) else [inputs])
        fw, bw = self.forward_layer, self.backward_layer
        n = fw._n_states()
        fw_out, fw_states = fw._sequence(x, states[:n], src, training)
        bw_out, bw_states = bw._sequence(x, states[n:], src, training)
        if self.return_sequences:
            bw_out = bw_out[::-1]  # processing order -> time order
            if self.merge_mode == "concat":
                steps = [v for pair in zip(fw_out, bw_out) for v in pair]
                outputs = [ops.reshape(ops.concat(steps, axis=1), (0, len(fw_out), fw.units + bw.units))]
            else:
                y, y_rev = _stack(fw_out, fw.units), _stack(bw_out, bw.units)
                outputs = self._merge(y, y_rev)
        else:
            outputs = self._merge(fw_out[-1], bw_out[-1])
        if self.return_state:
            return outputs + fw_states + bw_states
        return outputs if self.merge_mode is None else outputs[0]

    def _merge(self, y, y_rev):
        mode = self.merge_mode
        if mode == "concat":
            return [ops.concat([y, y_rev], axis=-1)]
        if mode == "sum":
            return [y + y_rev]
        if mode == "ave":
            return [(y + y_rev) * 0.5]
        if mode == "mul":
            return [y * y_rev]
        return [y, y_rev]

    def get_config(self):
        from kgraph.models.serialization import serialize_layer
        return {**super().get_config(), "merge_mode": self.merge_mode,
                "layer": serialize_layer(self.forward_layer),
                "backward_layer": serialize_layer(self.backward_layer)}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        from kgraph.models.serialization import deserialize_layer
        config = dict(config)
        config["layer"] = deserialize_layer(config["layer"], custom_objects)
        if config.get("backward_layer") is not None:
            config["backward_layer"] = deserialize_layer(config["backward_layer"], custom_objects)
        return cls(**config)
