"""BatchNormalization and LayerNormalization (Keras 3 formulas), composed of IR ops.

Both compute y = x * inv + (beta - mean * inv) with inv = gamma / sqrt(var + epsilon),
as keras.ops.batch_normalization / layer_normalization do; autodiff differentiates
the composition. BatchNormalization in training mode (and only if the layer is
trainable, as Keras) normalizes with the batch's mean and biased variance and hands
`moving = moving * momentum + stat * (1 - momentum)` to the trace's state updates,
which the train-step graph outputs and the runtime feeds back; otherwise it uses the
moving statistics (a frozen inference graph folds inv and the shift into constants).
"""
from __future__ import annotations

from kgraph import initializers, regularizers
from kgraph.engine.layer import Layer, current_trace
from kgraph.ir import ops


def _reg(r):
    return r and regularizers.serialize(r)


def _normalize(x, mean, var, gamma, beta, epsilon):
    inv = 1.0 / ops.sqrt(var + epsilon)
    if gamma is not None:
        inv = inv * gamma
    shift = -(mean * inv)
    if beta is not None:
        shift = shift + beta
    return x * inv + shift


class BatchNormalization(Layer):
    def __init__(self, axis=-1, momentum=0.99, epsilon=1e-3, center=True, scale=True,
                 beta_initializer="zeros", gamma_initializer="ones",
                 moving_mean_initializer="zeros", moving_variance_initializer="ones",
                 beta_regularizer=None, gamma_regularizer=None, beta_constraint=None,
                 gamma_constraint=None, synchronized=False, **kwargs):
        for k in ("renorm", "renorm_clipping", "renorm_momentum"):
            if kwargs.get(k) not in (None, False, 0.99):
                raise ValueError(f"BatchNormalization: batch renormalization is not available. "
                                 f"Received: {k}={kwargs[k]!r}")
            kwargs.pop(k, None)
        super().__init__(**kwargs)
        if not isinstance(axis, int):
            raise ValueError(f"BatchNormalization '{self.name}': `axis` must be an int. "
                             f"Received: axis={axis!r}")
        self.axis = axis
        self.momentum, self.epsilon = float(momentum), float(epsilon)
        self.center, self.scale = bool(center), bool(scale)
        self.synchronized = bool(synchronized)
        self.beta_initializer = initializers.get(beta_initializer)
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.moving_mean_initializer = initializers.get(moving_mean_initializer)
        self.moving_variance_initializer = initializers.get(moving_variance_initializer)
        self.beta_regularizer = regularizers.get(beta_regularizer)
        self.gamma_regularizer = regularizers.get(gamma_regularizer)
        self.gamma = self.beta = None
        self._features = None

    def _check(self, shape):
        rank = len(shape)
        if not -rank <= self.axis < rank or self.axis % rank == 0:
            raise self._error(f"axis {self.axis} is out of bounds for the input (the batch axis "
                              f"cannot be normalized over). Received: input_shape={tuple(shape)}")
        n = shape[self.axis]
        if n is None:
            raise self._error(f"the normalized axis {self.axis} must have a defined size. "
                              f"Received: input_shape={tuple(shape)}")
        if self._features is not None and (n != self._features or rank != self._rank):
            raise self._error(f"expects inputs of rank {self._rank} with {self._features} features "
                              f"on axis {self.axis}, as when it was built. "
                              f"Received: input_shape={tuple(shape)}")
        return n

    def build(self, input_shape):
        n = self._check(input_shape)
        shape = (n,)
        if self.scale:
            self.gamma = self.add_weight(shape, self.gamma_initializer, "gamma",
                                         regularizer=self.gamma_regularizer)
        if self.center:
            self.beta = self.add_weight(shape, self.beta_initializer, "beta",
                                        regularizer=self.beta_regularizer)
        self.moving_mean = self.add_weight(shape, self.moving_mean_initializer, "moving_mean",
                                           trainable=False)
        self.moving_variance = self.add_weight(shape, self.moving_variance_initializer,
                                               "moving_variance", trainable=False)
        self._features, self._rank = n, len(input_shape)

    def call(self, inputs, training=False):
        self._check(inputs.shape)
        rank = inputs.type.rank
        axis = self.axis % rank
        reduce_axes = tuple(i for i in range(rank) if i != axis)
        last = axis == rank - 1

        def bcast(v):  # (C,) -> broadcastable against the input
            if v is None or last:
                return v
            return ops.reshape(v, tuple(self._features if i == axis else 1 for i in range(rank)))

        if training and self.trainable:
            mean = ops.reduce_mean(inputs, axes=reduce_axes, keepdims=True)
            centered = inputs - mean
            var = ops.reduce_mean(centered * centered, axes=reduce_axes, keepdims=True)
            inv = 1.0 / ops.sqrt(var + self.epsilon)
            if self.gamma is not None:
                inv = inv * bcast(self.gamma)
            y = centered * inv
            if self.beta is not None:
                y = y + bcast(self.beta)
            ctx = current_trace()
            if ctx is not None:
                m = self.momentum
                for var_, stat in ((self.moving_mean, mean), (self.moving_variance, var)):
                    stat = ops.reshape(stat, (self._features,))
                    ctx.updates.append((var_, ops.as_value(var_) * m + stat * (1.0 - m)))
            return y
        return _normalize(inputs, bcast(ops.as_value(self.moving_mean)),
                          bcast(ops.as_value(self.moving_variance)), bcast(self.gamma),
                          bcast(self.beta), self.epsilon)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis, "momentum": self.momentum,
                "epsilon": self.epsilon, "center": self.center, "scale": self.scale,
                "beta_initializer": initializers.serialize(self.beta_initializer),
                "gamma_initializer": initializers.serialize(self.gamma_initializer),
                "moving_mean_initializer": initializers.serialize(self.moving_mean_initializer),
                "moving_variance_initializer": initializers.serialize(self.moving_variance_initializer),
                "beta_regularizer": _reg(self.beta_regularizer),
                "gamma_regularizer": _reg(self.gamma_regularizer),
                "beta_constraint": None, "gamma_constraint": None,
                "synchronized": self.synchronized}


class LayerNormalization(Layer):
    """Per-sample statistics over `axis` (int or list); gamma/beta of the normalized shape."""

    def __init__(self, axis=-1, epsilon=1e-3, center=True, scale=True, beta_initializer="zeros",
                 gamma_initializer="ones", beta_regularizer=None, gamma_regularizer=None,
                 beta_constraint=None, gamma_constraint=None, **kwargs):
        if kwargs.pop("rms_scaling", False):
            raise ValueError("LayerNormalization: `rms_scaling=True` is deprecated in Keras 3 "
                             "and not available. Received: rms_scaling=True")
        super().__init__(**kwargs)
        if isinstance(axis, (list, tuple)):
            self.axis = [int(a) for a in axis]
        elif isinstance(axis, int):
            self.axis = axis
        else:
            raise TypeError(f"LayerNormalization '{self.name}': expected an int or a list/tuple "
                            f"of ints for the argument 'axis'. Received: axis={axis!r}")
        self.epsilon = float(epsilon)
        self.center, self.scale = bool(center), bool(scale)
        self.beta_initializer = initializers.get(beta_initializer)
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.beta_regularizer = regularizers.get(beta_regularizer)
        self.gamma_regularizer = regularizers.get(gamma_regularizer)
        self.gamma = self.beta = None
        self._built_shape = None

    def _axes(self, shape):
        rank = len(shape)
        axes = self.axis if isinstance(self.axis, list) else [self.axis]
        for a in axes:
            if not -rank <= a < rank or a % rank == 0:
                raise self._error(f"axis {a} is out of bounds for the input (the batch axis "
                                  f"cannot be normalized over). Received: input_shape={tuple(shape)}")
        axes = sorted(a % rank for a in axes)
        param_shape = tuple(shape[a] for a in axes)
        if None in param_shape:
            raise self._error(f"the normalized axes {axes} must have defined sizes. "
                              f"Received: input_shape={tuple(shape)}")
        if self._built_shape is not None and (param_shape, rank) != self._built_shape:
            raise self._error(f"expects inputs of rank {self._built_shape[1]} with normalized "
                              f"shape {self._built_shape[0]}, as when it was built. "
                              f"Received: input_shape={tuple(shape)}")
        return axes, param_shape

    def build(self, input_shape):
        axes, shape = self._axes(input_shape)
        if self.scale:
            self.gamma = self.add_weight(shape, self.gamma_initializer, "gamma",
                                         regularizer=self.gamma_regularizer)
        if self.center:
            self.beta = self.add_weight(shape, self.beta_initializer, "beta",
                                        regularizer=self.beta_regularizer)
        self._built_shape = (shape, len(input_shape))

    def call(self, inputs, training=False):
        axes, param_shape = self._axes(inputs.shape)
        rank = inputs.type.rank
        trailing = axes == list(range(rank - len(axes), rank))

        def bcast(v):
            if v is None or trailing:
                return v
            return ops.reshape(v, tuple(inputs.shape[i] if i in axes else 1 for i in range(rank)))

        mean = ops.reduce_mean(inputs, axes=axes, keepdims=True)
        centered = inputs - mean
        var = ops.reduce_mean(centered * centered, axes=axes, keepdims=True)
        return _normalize(inputs, mean, var, bcast(self.gamma), bcast(self.beta), self.epsilon)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis, "epsilon": self.epsilon,
                "center": self.center, "scale": self.scale, "rms_scaling": False,
                "beta_initializer": initializers.serialize(self.beta_initializer),
                "gamma_initializer": initializers.serialize(self.gamma_initializer),
                "beta_regularizer": _reg(self.beta_regularizer),
                "gamma_regularizer": _reg(self.gamma_regularizer),
                "beta_constraint": None, "gamma_constraint": None}
