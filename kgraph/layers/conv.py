"""Convolution layers: Conv1D, Conv2D, Conv2DTranspose, DepthwiseConv2D, SeparableConv2D.

Keras 3 semantics: channels_last by default, Keras kernel layouts ((*k, cin/groups, filters);
Conv2DTranspose (*k, filters, cin); depthwise (*k, cin, multiplier)), TensorFlow's 'same'
padding (odd pixel at the end). The IR conv ops are channels-first (ONNX), so a
channels_last layer emits transpose -> conv(+bias) -> activation -> transpose; the
kernel is transposed to ONNX's layout inside the graph (a frozen inference graph folds
it). Elementwise activations run before the transpose back, next to the conv, where
onnxruntime can fuse them.
"""
from __future__ import annotations

import numpy as np

from kgraph import activations, initializers, regularizers
from kgraph.engine.layer import Layer
from kgraph.ir import ops
from kgraph.ir.ops.conv import conv_out_size, effective_kernel, same_pads


# ---- argument handling shared by the conv, pooling and reshaping layers ------------------
def normalize_tuple(value, n, arg, owner, allow_zero=False):
    """An int or a sequence of n ints -> tuple of n ints (Keras `standardize_tuple`)."""
    if isinstance(value, (int, np.integer)):
        out = (int(value),) * n
    else:
        try:
            out = tuple(int(v) for v in value)
        except (TypeError, ValueError):
            out = ()
        if len(out) != n or any(not isinstance(v, (int, np.integer)) for v in value):
            raise ValueError(f"{owner}: the `{arg}` argument must be an int or a tuple of {n} "
                             f"ints. Received: {arg}={value!r}")
    low = 0 if allow_zero else 1
    if any(v < low for v in out):
        raise ValueError(f"{owner}: the `{arg}` argument must be "
                         f"{'non-negative' if allow_zero else 'positive'}. Received: {arg}={value!r}")
    return out


def normalize_padding(value, owner, allow_causal=False):
    allowed = ("valid", "same", "causal") if allow_causal else ("valid", "same")
    p = value.lower() if isinstance(value, str) else value
    if p not in allowed:
        raise ValueError(f"{owner}: the `padding` argument must be one of {allowed}. "
                         f"Received: padding={value!r}")
    return p


def normalize_data_format(value, owner):
    v = "channels_last" if value is None else str(value).lower()
    if v not in ("channels_last", "channels_first"):
        raise ValueError(f"{owner}: the `data_format` argument must be 'channels_last' or "
                         f"'channels_first'. Received: data_format={value!r}")
    return v


class SpatialLayer(Layer):
    """A layer on (batch, *spatial, channels) or (batch, channels, *spatial) tensors."""

    rank = 2  # number of spatial dimensions

    @property
    def _owner(self):
        return f"{type(self).__name__} '{self.name}'"

    def _channel_axis(self):
        return -1 if self.data_format == "channels_last" else 1

    def _spatial(self, shape):
        return tuple(shape[1:-1]) if self.data_format == "channels_last" else tuple(shape[2:])

    def _check_rank(self, shape):
        want = self.rank + 2
        if len(shape) != want:
            spatial = {1: "steps", 2: "height, width"}.get(self.rank, "spatial...")
            layout = (f"(batch, {spatial}, channels)" if self.data_format == "channels_last"
                      else f"(batch, channels, {spatial})")
            raise self._error(f"expects inputs of rank {want} {layout}. "
                              f"Received: input_shape={tuple(shape)}")

    def _to_cf(self, x):
        """channels_last -> the IR's channels-first layout."""
        if self.data_format == "channels_first":
            return x
        r = self.rank
        return ops.transpose(x, (0, r + 1) + tuple(range(1, r + 1)))

    def _from_cf(self, x):
        if self.data_format == "channels_first":
            return x
        r = self.rank
        return ops.transpose(x, (0,) + tuple(range(2, r + 2)) + (1,))


def _is_elementwise(act):
    return (getattr(act, "__module__", None) == activations.__name__
            and getattr(act, "__name__", "") not in ("softmax", "log_softmax"))


def onnx_kernel(kernel, rank):
    """Keras (*k, a, b) -> ONNX (b, a, *k): Conv's (cout, cin/g, *k), ConvTranspose's (cin, cout, *k)."""
    return ops.transpose(kernel, (rank + 1, rank) + tuple(range(rank)))


def depthwise_onnx_kernel(kernel, rank):
    """Keras depthwise (*k, cin, mult) -> grouped Conv weight (cin*mult, 1, *k); output
    channel c*mult + m, as TensorFlow's depthwise_conv2d."""
    k = kernel.shape[:rank]
    flat = ops.reshape(kernel, tuple(k) + (1, kernel.shape[rank] * kernel.shape[rank + 1]))
    return onnx_kernel(flat, rank)


class BaseConv(SpatialLayer):
    """What every convolution shares: geometry arguments, checks, the channels-first call."""

    _causal_ok = False

    def _init_geometry(self, kernel_size, strides, padding, data_format, dilation_rate):
        o = self._owner
        self.kernel_size = normalize_tuple(kernel_size, self.rank, "kernel_size", o)
        self.strides = normalize_tuple(strides, self.rank, "strides", o)
        self.dilation_rate = normalize_tuple(dilation_rate, self.rank, "dilation_rate", o)
        self.padding = normalize_padding(padding, o, allow_causal=self._causal_ok)
        self.data_format = normalize_data_format(data_format, o)
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ValueError(f"{o}: `strides > 1` not supported in conjunction with "
                             f"`dilation_rate > 1`. Received: strides={self.strides} and "
                             f"dilation_rate={self.dilation_rate}")

    def _init_activation(self, activation):
        try:
            self.activation = activations.get(activation)
        except ValueError as e:
            raise ValueError(f"{self._owner}: {e}") from None

    def _input_channels(self, shape):
        c = shape[self._channel_axis()]
        if c is None:
            raise self._error(f"the channel dimension of the inputs must be defined. "
                              f"Received: input_shape={tuple(shape)}")
        return c

    def _check_input(self, shape):
        """Rank, channels (once built) and a positive output size, before any op is emitted."""
        self._check_rank(shape)
        c = shape[self._channel_axis()]
        if getattr(self, "input_channels", None) is not None and c not in (None, self.input_channels):
            raise self._error(f"expects inputs with {self.input_channels} channels (axis "
                              f"{self._channel_axis()}), as when it was built. "
                              f"Received: input_shape={tuple(shape)}")
        if self.padding == "valid":
            for n, k, s, d in zip(self._spatial(shape), self.kernel_size, self.strides,
                                  self.dilation_rate):
                if n is not None and conv_out_size(n, k, s, d, 0, 0) < 1:
                    raise self._error(
                        f"computed output size would be zero or negative: the kernel "
                        f"(kernel_size={self.kernel_size}, dilation_rate={self.dilation_rate}) is "
                        f"larger than the input with padding='valid'. Received: "
                        f"input_shape={tuple(shape)}")

    def _pads(self, shape):
        begins, ends = [], []
        for n, k, s, d in zip(self._spatial(shape), self.kernel_size, self.strides, self.dilation_rate):
            if self.padding == "valid":
                pb, pe = 0, 0
            elif self.padding == "causal":
                pb, pe = effective_kernel(k, d) - 1, 0
            else:
                try:
                    pb, pe = same_pads(n, k, s, d)
                except ValueError as e:
                    raise self._error(f"{e}. Received: input_shape={tuple(shape)}") from None
            begins.append(pb)
            ends.append(pe)
        return tuple(begins) + tuple(ends)

    def _finish(self, y):
        """Activation (next to the conv when elementwise) and back to the user's layout."""
        if _is_elementwise(self.activation):
            return self._from_cf(self.activation(y))
        y = self._from_cf(y)
        return self.activation(y)

    def _geometry_config(self):
        return {"kernel_size": self.kernel_size, "strides": self.strides, "padding": self.padding,
                "data_format": self.data_format, "dilation_rate": self.dilation_rate}


def _reg(r):
    return r and regularizers.serialize(r)


class Conv(BaseConv):
    """Conv1D / Conv2D: kernel (*kernel_size, cin // groups, filters), bias (filters,)."""

    def __init__(self, filters, kernel_size, strides=1, padding="valid", data_format=None,
                 dilation_rate=1, groups=1, activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 kernel_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                 kernel_constraint=None, bias_constraint=None, **kwargs):
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        o = self._owner
        if not isinstance(filters, (int, np.integer)) or filters <= 0:
            raise ValueError(f"{o}: invalid value for argument `filters`. Expected a strictly "
                             f"positive value. Received: filters={filters!r}")
        if not isinstance(groups, (int, np.integer)) or groups <= 0:
            raise ValueError(f"{o}: the number of groups must be a positive integer. "
                             f"Received: groups={groups!r}")
        if filters % groups:
            raise ValueError(f"{o}: the number of filters must be evenly divisible by the number "
                             f"of groups. Received: groups={groups}, filters={filters}")
        self.filters, self.groups = int(filters), int(groups)
        self._init_geometry(kernel_size, strides, padding, data_format, dilation_rate)
        self._init_activation(activation)
        self.use_bias = use_bias
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.input_channels = None

    def build(self, input_shape):
        self._check_rank(input_shape)
        c = self._input_channels(input_shape)
        if c % self.groups:
            raise self._error(f"the number of input channels must be evenly divisible by the "
                              f"number of groups. Received: groups={self.groups}, "
                              f"input_shape={tuple(input_shape)}")
        self._check_input(input_shape)
        self.input_channels = c
        self.kernel = self.add_weight(self.kernel_size + (c // self.groups, self.filters),
                                      self.kernel_initializer, "kernel",
                                      regularizer=self.kernel_regularizer)
        self.bias = self.add_weight((self.filters,), self.bias_initializer, "bias",
                                    regularizer=self.bias_regularizer) if self.use_bias else None

    def call(self, inputs, training=False):
        self._check_input(inputs.shape)
        y = ops.conv(self._to_cf(inputs), onnx_kernel(self.kernel, self.rank),
                     self.bias, strides=self.strides, dilations=self.dilation_rate,
                     pads=self._pads(inputs.shape), groups=self.groups)
        return self._finish(y)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, **self._geometry_config(),
                "groups": self.groups, "activation": activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "kernel_initializer": initializers.serialize(self.kernel_initializer),
                "bias_initializer": initializers.serialize(self.bias_initializer),
                "kernel_regularizer": _reg(self.kernel_regularizer),
                "bias_regularizer": _reg(self.bias_regularizer),
                "kernel_constraint": None, "bias_constraint": None}


class Conv1D(Conv):
    rank = 1
    _causal_ok = True

    def __init__(self, filters, kernel_size, strides=1, padding="valid", data_format=None,
                 dilation_rate=1, groups=1, **kwargs):
        super().__init__(filters, kernel_size, strides=strides, padding=padding,
                         data_format=data_format, dilation_rate=dilation_rate, groups=groups,
                         **kwargs)


class Conv2D(Conv):
    rank = 2

    def __init__(self, filters, kernel_size, strides=(1, 1), padding="valid", data_format=None,
                 dilation_rate=(1, 1), groups=1, **kwargs):
        super().__init__(filters, kernel_size, strides=strides, padding=padding,
                         data_format=data_format, dilation_rate=dilation_rate, groups=groups,
                         **kwargs)


def transpose_padding(k, s, d, padding, output_padding):
    """Keras's conv_transpose geometry (its JAX conversion: left/right padding of the
    stride-dilated input) as ONNX ConvTranspose (pad_begin, pad_end, output_padding)."""
    ke = effective_kernel(k, d)
    if padding == "valid":
        op = max(ke, s) - ke if output_padding is None else output_padding
        left, right = ke - 1, ke - 1 + op
    else:
        pad_len = s + ke - 2 if output_padding is None else ke + ke % 2 - 2 + output_padding
        left = min(pad_len // 2 + pad_len % 2, ke - 1)
        right = pad_len - left
    tail = ke - 1 - right
    return ke - 1 - left, max(tail, 0), max(-tail, 0)


class Conv2DTranspose(BaseConv):
    """Kernel (kh, kw, filters, cin), bias (filters,). Output size: 'valid'
    (n-1)*s + max(k, s), 'same' n*s, or (n-1)*s + k - 2*(k//2 if same) + output_padding."""

    rank = 2

    def __init__(self, filters, kernel_size, strides=(1, 1), padding="valid", output_padding=None,
                 data_format=None, dilation_rate=(1, 1), activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 kernel_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                 kernel_constraint=None, bias_constraint=None, **kwargs):
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        o = self._owner
        if not isinstance(filters, (int, np.integer)) or filters <= 0:
            raise ValueError(f"{o}: invalid value for argument `filters`. Expected a strictly "
                             f"positive value. Received: filters={filters!r}")
        self.filters = int(filters)
        self._init_geometry(kernel_size, strides, padding, data_format, dilation_rate)
        self.output_padding = None if output_padding is None else normalize_tuple(
            output_padding, self.rank, "output_padding", o, allow_zero=True)
        if self.output_padding is not None:
            for op, s in zip(self.output_padding, self.strides):
                if op >= s:
                    raise ValueError(f"{o}: `output_padding` must be strictly less than "
                                     f"`strides`. Received: output_padding={self.output_padding}, "
                                     f"strides={self.strides}")
        self._init_activation(activation)
        self.use_bias = use_bias
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.input_channels = None

    def _check_input(self, shape):
        self._check_rank(shape)
        c = shape[self._channel_axis()]
        if self.input_channels is not None and c not in (None, self.input_channels):
            raise self._error(f"expects inputs with {self.input_channels} channels (axis "
                              f"{self._channel_axis()}), as when it was built. "
                              f"Received: input_shape={tuple(shape)}")

    def build(self, input_shape):
        self._check_rank(input_shape)
        c = self._input_channels(input_shape)
        self.input_channels = c
        self.kernel = self.add_weight(self.kernel_size + (self.filters, c), self.kernel_initializer,
                                      "kernel", regularizer=self.kernel_regularizer)
        self.bias = self.add_weight((self.filters,), self.bias_initializer, "bias",
                                    regularizer=self.bias_regularizer) if self.use_bias else None

    def call(self, inputs, training=False):
        self._check_input(inputs.shape)
        geo = [transpose_padding(k, s, d, self.padding,
                                 None if self.output_padding is None else self.output_padding[i])
               for i, (k, s, d) in enumerate(zip(self.kernel_size, self.strides, self.dilation_rate))]
        pads = tuple(g[0] for g in geo) + tuple(g[1] for g in geo)
        y = ops.conv_transpose(self._to_cf(inputs), onnx_kernel(self.kernel, self.rank), self.bias,
                               strides=self.strides, dilations=self.dilation_rate, pads=pads,
                               output_padding=tuple(g[2] for g in geo))
        return self._finish(y)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, **self._geometry_config(),
                "output_padding": self.output_padding,
                "activation": activations.serialize(self.activation), "use_bias": self.use_bias,
                "kernel_initializer": initializers.serialize(self.kernel_initializer),
                "bias_initializer": initializers.serialize(self.bias_initializer),
                "kernel_regularizer": _reg(self.kernel_regularizer),
                "bias_regularizer": _reg(self.bias_regularizer),
                "kernel_constraint": None, "bias_constraint": None}


class _DepthwiseBase(BaseConv):
    rank = 2

    def _init_depthwise(self, depth_multiplier):
        if not isinstance(depth_multiplier, (int, np.integer)) or depth_multiplier <= 0:
            raise ValueError(f"{self._owner}: invalid value for argument `depth_multiplier`. "
                             f"Expected a strictly positive value. "
                             f"Received: depth_multiplier={depth_multiplier!r}")
        self.depth_multiplier = int(depth_multiplier)
        self.input_channels = None

    def _depthwise(self, inputs, bias=None):
        c = self.input_channels
        return ops.conv(self._to_cf(inputs), depthwise_onnx_kernel(self.depthwise_weight, self.rank),
                        bias, strides=self.strides, dilations=self.dilation_rate,
                        pads=self._pads(inputs.shape), groups=c)


class DepthwiseConv2D(_DepthwiseBase):
    """One (kh, kw) filter per input channel and multiplier: kernel (kh, kw, cin, multiplier),
    bias (cin * multiplier,), a grouped Conv with groups = cin."""

    def __init__(self, kernel_size, strides=(1, 1), padding="valid", depth_multiplier=1,
                 data_format=None, dilation_rate=(1, 1), activation=None, use_bias=True,
                 depthwise_initializer="glorot_uniform", bias_initializer="zeros",
                 depthwise_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                 depthwise_constraint=None, bias_constraint=None, **kwargs):
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        self._init_geometry(kernel_size, strides, padding, data_format, dilation_rate)
        self._init_depthwise(depth_multiplier)
        self._init_activation(activation)
        self.use_bias = use_bias
        self.depthwise_initializer = initializers.get(depthwise_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.depthwise_regularizer = regularizers.get(depthwise_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)

    def build(self, input_shape):
        self._check_rank(input_shape)
        c = self._input_channels(input_shape)
        self._check_input(input_shape)
        self.input_channels = c
        self.kernel = self.add_weight(self.kernel_size + (c, self.depth_multiplier),
                                      self.depthwise_initializer, "kernel",
                                      regularizer=self.depthwise_regularizer)
        self.bias = self.add_weight((c * self.depth_multiplier,), self.bias_initializer, "bias",
                                    regularizer=self.bias_regularizer) if self.use_bias else None

    @property
    def depthwise_weight(self):
        return self.kernel

    def call(self, inputs, training=False):
        self._check_input(inputs.shape)
        return self._finish(self._depthwise(inputs, self.bias))

    def get_config(self):
        return {**super().get_config(), "depth_multiplier": self.depth_multiplier,
                **self._geometry_config(), "activation": activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "depthwise_initializer": initializers.serialize(self.depthwise_initializer),
                "bias_initializer": initializers.serialize(self.bias_initializer),
                "depthwise_regularizer": _reg(self.depthwise_regularizer),
                "bias_regularizer": _reg(self.bias_regularizer),
                "depthwise_constraint": None, "bias_constraint": None}


class SeparableConv2D(_DepthwiseBase):
    """Depthwise conv (kh, kw, cin, multiplier) with the layer's strides, padding and
    dilation, then a 1x1 pointwise conv (1, 1, cin*multiplier, filters) with the bias."""

    def __init__(self, filters, kernel_size, strides=(1, 1), padding="valid", data_format=None,
                 dilation_rate=(1, 1), depth_multiplier=1, activation=None, use_bias=True,
                 depthwise_initializer="glorot_uniform", pointwise_initializer="glorot_uniform",
                 bias_initializer="zeros", depthwise_regularizer=None, pointwise_regularizer=None,
                 bias_regularizer=None, activity_regularizer=None, depthwise_constraint=None,
                 pointwise_constraint=None, bias_constraint=None, **kwargs):
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        if not isinstance(filters, (int, np.integer)) or filters <= 0:
            raise ValueError(f"{self._owner}: invalid value for argument `filters`. Expected a "
                             f"strictly positive value. Received: filters={filters!r}")
        self.filters = int(filters)
        self._init_geometry(kernel_size, strides, padding, data_format, dilation_rate)
        self._init_depthwise(depth_multiplier)
        self._init_activation(activation)
        self.use_bias = use_bias
        self.depthwise_initializer = initializers.get(depthwise_initializer)
        self.pointwise_initializer = initializers.get(pointwise_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.depthwise_regularizer = regularizers.get(depthwise_regularizer)
        self.pointwise_regularizer = regularizers.get(pointwise_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)

    def build(self, input_shape):
        self._check_rank(input_shape)
        c = self._input_channels(input_shape)
        self._check_input(input_shape)
        self.input_channels = c
        m = self.depth_multiplier
        self.depthwise_kernel = self.add_weight(self.kernel_size + (c, m), self.depthwise_initializer,
                                                "depthwise_kernel",
                                                regularizer=self.depthwise_regularizer)
        self.pointwise_kernel = self.add_weight((1,) * self.rank + (c * m, self.filters),
                                                self.pointwise_initializer, "pointwise_kernel",
                                                regularizer=self.pointwise_regularizer)
        self.bias = self.add_weight((self.filters,), self.bias_initializer, "bias",
                                    regularizer=self.bias_regularizer) if self.use_bias else None

    @property
    def depthwise_weight(self):
        return self.depthwise_kernel

    def call(self, inputs, training=False):
        self._check_input(inputs.shape)
        y = self._depthwise(inputs)
        y = ops.conv(y, onnx_kernel(self.pointwise_kernel, self.rank), self.bias)
        return self._finish(y)

    def get_config(self):
        return {**super().get_config(), "depth_multiplier": self.depth_multiplier,
                "filters": self.filters, **self._geometry_config(),
                "activation": activations.serialize(self.activation), "use_bias": self.use_bias,
                "depthwise_initializer": initializers.serialize(self.depthwise_initializer),
                "pointwise_initializer": initializers.serialize(self.pointwise_initializer),
                "bias_initializer": initializers.serialize(self.bias_initializer),
                "depthwise_regularizer": _reg(self.depthwise_regularizer),
                "pointwise_regularizer": _reg(self.pointwise_regularizer),
                "bias_regularizer": _reg(self.bias_regularizer),
                "depthwise_constraint": None, "pointwise_constraint": None,
                "bias_constraint": None}
