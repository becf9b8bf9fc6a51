"""Convolution, pooling, normalization, reshaping and noise layers against NumPy.

1. A table of forward cases, one layer per row: `model.predict` against a float64
   NumPy reference written here from the Keras 3 / TensorFlow definitions
   (channels_last, Keras kernel layouts, SAME = odd pixel at the end); the exported
   inference ONNX passes the full checker and gives the same numbers in onnx.reference.
2. Training: a LeNet-style CNN on the bundled digits; BatchNormalization's moving
   statistics after one epoch against Keras's update rule; one SGD step of a small
   conv model against central differences of the NumPy forward pass.
3. Noise layers in training mode, bad input errors, configs.
4. Optional: the NumPy references themselves against real Keras (torch backend).
"""
from __future__ import annotations

import importlib.util
import itertools
import math
import os
from dataclasses import dataclass
from typing import Callable

import numpy as np
import onnx
import pytest
from onnx.reference import ReferenceEvaluator

import kgraph
from kgraph import layers
from kgraph.runtime.inference import compile_inference

TOL = dict(rtol=1e-5, atol=1e-5)
BATCH = 3


# ---------------------------------------------------------------------------------------
# NumPy references (float64, channels_last)
# ---------------------------------------------------------------------------------------
def tf_same_pads(n, k, s, d=1):
    """TensorFlow SAME: output ceil(n/s); total padding split with the extra at the end."""
    ke = (k - 1) * d + 1
    out = -(-n // s)
    total = max((out - 1) * s + ke - n, 0)
    return total // 2, total - total // 2


def pads_for(mode, sizes, ks, ss, ds):
    if mode == "valid":
        return [(0, 0)] * len(sizes)
    if mode == "causal":
        return [((k - 1) * d, 0) for k, d in zip(ks, ds)]
    return [tf_same_pads(n, k, s, d) for n, k, s, d in zip(sizes, ks, ss, ds)]


def _windows(xp, ks, ss, ds, outs):
    """Yields (kernel offset, strided view of xp (N, *outs, C)) for every kernel offset."""
    for off in itertools.product(*[range(k) for k in ks]):
        idx = (slice(None),) + tuple(slice(o * d, o * d + (n - 1) * s + 1, s)
                                     for o, d, s, n in zip(off, ds, ss, outs)) + (slice(None),)
        yield off, xp[idx]


def _pad(x, pads, value=0.0):
    return np.pad(x, [(0, 0)] + list(pads) + [(0, 0)], constant_values=value)


def _out_sizes(sizes, ks, ss, ds, pads):
    return [(n + pb + pe - (k - 1) * d - 1) // s + 1 for n, k, s, d, (pb, pe) in zip(sizes, ks, ss, ds, pads)]


def np_conv(x, kernel, bias=None, strides=1, padding="valid", dilation=1, groups=1):
    """y[n, o, m] = sum_{j, c} x_pad[n, o*s + j*d, g(m)*Cg + c] * kernel[j, c, m] + bias[m]."""
    r = x.ndim - 2
    ks = kernel.shape[:r]
    ss = (strides,) * r if isinstance(strides, int) else tuple(strides)
    ds = (dilation,) * r if isinstance(dilation, int) else tuple(dilation)
    pads = pads_for(padding, x.shape[1:-1], ks, ss, ds)
    outs = _out_sizes(x.shape[1:-1], ks, ss, ds, pads)
    cg, m = kernel.shape[-2], kernel.shape[-1]
    mg = m // groups
    y = np.zeros((x.shape[0], *outs, m))
    for off, view in _windows(_pad(x, pads), ks, ss, ds, outs):
        w = kernel[off]
        for g in range(groups):
            y[..., g * mg:(g + 1) * mg] += view[..., g * cg:(g + 1) * cg] @ w[:, g * mg:(g + 1) * mg]
    return y if bias is None else y + bias


def np_conv_transpose(x, kernel, bias=None, strides=1, padding="valid", output_padding=None,
                      dilation=1):
    """TensorFlow's conv2d_transpose (the input gradient of a conv on the output):
    output size by Keras's rule, forward-conv padding as TF computes it for that size;
    y[o*s + j*d - pad] += x[o] @ kernel[j].T. Kernel (*k, filters, cin)."""
    r = x.ndim - 2
    ks = kernel.shape[:r]
    ss = (strides,) * r if isinstance(strides, int) else tuple(strides)
    ds = (dilation,) * r if isinstance(dilation, int) else tuple(dilation)
    ops_ = [None] * r if output_padding is None else (
        [output_padding] * r if isinstance(output_padding, int) else list(output_padding))
    sizes, pbs = [], []
    for n, k, s, d, op in zip(x.shape[1:-1], ks, ss, ds, ops_):
        ke = (k - 1) * d + 1
        if padding == "valid":
            length = (n - 1) * s + ke + (max(ke, s) - ke if op is None else op)
            pb = 0
        else:
            length = n * s if op is None else (n - 1) * s + ke % 2 + op
            assert -(-length // s) == n, "inconsistent geometry (TensorFlow rejects it)"
            pb = tf_same_pads(length, k, s, d)[0]
        sizes.append(length)
        pbs.append(pb)
    y = np.zeros((x.shape[0], *sizes, kernel.shape[-2]))
    for off in itertools.product(*[range(k) for k in ks]):
        contrib = x @ kernel[off].T  # (N, *in, filters)
        for pos in itertools.product(*[range(n) for n in x.shape[1:-1]]):
            t = [p * s + o * d - pb for p, s, o, d, pb in zip(pos, ss, off, ds, pbs)]
            if all(0 <= ti < L for ti, L in zip(t, sizes)):
                y[(slice(None), *t)] += contrib[(slice(None), *pos)]
    return y if bias is None else y + bias


def np_depthwise(x, kernel, bias=None, strides=1, padding="valid", dilation=1):
    """y[..., c*mult + m] = sum_j x_pad[..., o*s + j*d, c] * kernel[j, c, m] (TF order)."""
    r = x.ndim - 2
    ks = kernel.shape[:r]
    ss = (strides,) * r if isinstance(strides, int) else tuple(strides)
    ds = (dilation,) * r if isinstance(dilation, int) else tuple(dilation)
    pads = pads_for(padding, x.shape[1:-1], ks, ss, ds)
    outs = _out_sizes(x.shape[1:-1], ks, ss, ds, pads)
    c, mult = kernel.shape[-2:]
    y = np.zeros((x.shape[0], *outs, c, mult))
    for off, view in _windows(_pad(x, pads), ks, ss, ds, outs):
        y += view[..., :, None] * kernel[off]
    y = y.reshape(*y.shape[:-2], c * mult)
    return y if bias is None else y + bias


def np_pool(x, pool, strides, padding, mode):
    r = x.ndim - 2
    ks = (pool,) * r if isinstance(pool, int) else tuple(pool)
    ss = ks if strides is None else ((strides,) * r if isinstance(strides, int) else tuple(strides))
    pads = pads_for(padding, x.shape[1:-1], ks, ss, (1,) * r)
    outs = _out_sizes(x.shape[1:-1], ks, ss, (1,) * r, pads)
    if mode == "max":
        views = [v for _, v in _windows(_pad(x, pads, -np.inf), ks, ss, (1,) * r, outs)]
        return np.max(views, axis=0)
    total = sum(v for _, v in _windows(_pad(x, pads), ks, ss, (1,) * r, outs))
    count = sum(v for _, v in _windows(_pad(np.ones_like(x), pads), ks, ss, (1,) * r, outs))
    return total / count


def np_batchnorm(x, mean, var, gamma, beta, eps=1e-3, axis=-1):
    shape = [1] * x.ndim
    shape[axis] = -1
    g = np.ones_like(mean) if gamma is None else gamma
    b = np.zeros_like(mean) if beta is None else beta
    return (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps) * g.reshape(shape) + b.reshape(shape)


def np_layernorm(x, axes, gamma, beta, eps=1e-3):
    mean = x.mean(axis=tuple(axes), keepdims=True)
    var = ((x - mean) ** 2).mean(axis=tuple(axes), keepdims=True)
    y = (x - mean) / np.sqrt(var + eps)
    shape = [x.shape[i] if i in axes else 1 for i in range(x.ndim)]
    if gamma is not None:
        y = y * gamma.reshape(shape)
    if beta is not None:
        y = y + beta.reshape(shape)
    return y


def cf(fn):
    """A channels_last reference applied to channels_first data."""
    def wrapped(x, *a, **k):
        y = fn(np.moveaxis(x, 1, -1), *a, **k)
        return np.moveaxis(y, -1, 1)
    return wrapped


# ---------------------------------------------------------------------------------------
# The forward table
# ---------------------------------------------------------------------------------------
@dataclass
class Case:
    id: str
    make: Callable           # () -> layer
    in_shape: tuple          # without the batch
    out_shape: tuple         # expected symbolic output shape, batch None
    ref: Callable            # (x float64, weights list) -> expected


def conv_ref(**kw):
    return lambda x, ws: np_conv(x, ws[0], ws[1] if len(ws) > 1 else None, **kw)


CASES = [
    # Conv2D
    Case("Conv2D-valid", lambda: layers.Conv2D(4, 3), (7, 6, 2), (None, 5, 4, 4), conv_ref()),
    Case("Conv2D-same-s2-odd", lambda: layers.Conv2D(3, 3, strides=2, padding="same"), (7, 5, 2),
         (None, 4, 3, 3), conv_ref(strides=2, padding="same")),
    Case("Conv2D-same-s2-even", lambda: layers.Conv2D(3, (3, 2), strides=2, padding="same"), (8, 6, 3),
         (None, 4, 3, 3), conv_ref(strides=2, padding="same")),
    Case("Conv2D-same-even-kernel", lambda: layers.Conv2D(2, 4, padding="same"), (6, 5, 1),
         (None, 6, 5, 2), conv_ref(padding="same")),
    Case("Conv2D-valid-s2-asym", lambda: layers.Conv2D(3, (2, 3), strides=(2, 1)), (7, 6, 2),
         (None, 3, 4, 3), conv_ref(strides=(2, 1))),
    Case("Conv2D-dilation", lambda: layers.Conv2D(3, 3, dilation_rate=2, padding="same"), (7, 8, 2),
         (None, 7, 8, 3), conv_ref(padding="same", dilation=2)),
    Case("Conv2D-dilation-valid", lambda: layers.Conv2D(3, 2, dilation_rate=(2, 3)), (6, 7, 2),
         (None, 4, 4, 3), conv_ref(dilation=(2, 3))),
    Case("Conv2D-groups", lambda: layers.Conv2D(6, 3, groups=2, padding="same"), (5, 5, 4),
         (None, 5, 5, 6), conv_ref(padding="same", groups=2)),
    Case("Conv2D-nobias-relu", lambda: layers.Conv2D(4, 3, use_bias=False, activation="relu"), (5, 6, 3),
         (None, 3, 4, 4), lambda x, ws: np.maximum(np_conv(x, ws[0]), 0)),
    Case("Conv2D-softmax", lambda: layers.Conv2D(4, 1, activation="softmax"), (3, 3, 2), (None, 3, 3, 4),
         lambda x, ws: _softmax(np_conv(x, ws[0], ws[1]))),
    Case("Conv2D-channels_first", lambda: layers.Conv2D(3, 3, strides=2, padding="same",
                                                        data_format="channels_first"),
         (2, 7, 6), (None, 3, 4, 3), lambda x, ws: cf(np_conv)(x, ws[0], ws[1], strides=2, padding="same")),
    # Conv1D
    Case("Conv1D-valid", lambda: layers.Conv1D(4, 3), (9, 2), (None, 7, 4), conv_ref()),
    Case("Conv1D-same-s2", lambda: layers.Conv1D(3, 4, strides=2, padding="same"), (9, 2), (None, 5, 3),
         conv_ref(strides=2, padding="same")),
    Case("Conv1D-causal-dilation", lambda: layers.Conv1D(3, 3, padding="causal", dilation_rate=2), (8, 2),
         (None, 8, 3), conv_ref(padding="causal", dilation=2)),
    Case("Conv1D-groups", lambda: layers.Conv1D(4, 2, groups=2, activation="tanh"), (6, 4), (None, 5, 4),
         lambda x, ws: np.tanh(np_conv(x, ws[0], ws[1], groups=2))),
    # Conv2DTranspose
    Case("Conv2DTranspose-valid", lambda: layers.Conv2DTranspose(3, 3), (4, 5, 2), (None, 6, 7, 3),
         lambda x, ws: np_conv_transpose(x, ws[0], ws[1])),
    Case("Conv2DTranspose-valid-s2", lambda: layers.Conv2DTranspose(3, 3, strides=2), (4, 3, 2),
         (None, 9, 7, 3), lambda x, ws: np_conv_transpose(x, ws[0], ws[1], strides=2)),
    Case("Conv2DTranspose-valid-s3-k2", lambda: layers.Conv2DTranspose(2, 2, strides=3), (3, 2, 2),
         (None, 9, 6, 2), lambda x, ws: np_conv_transpose(x, ws[0], ws[1], strides=3)),
    Case("Conv2DTranspose-same-s2-k3", lambda: layers.Conv2DTranspose(3, 3, strides=2, padding="same"),
         (3, 4, 2), (None, 6, 8, 3),
         lambda x, ws: np_conv_transpose(x, ws[0], ws[1], strides=2, padding="same")),
    Case("Conv2DTranspose-same-s2-k4", lambda: layers.Conv2DTranspose(2, 4, strides=2, padding="same"),
         (3, 3, 2), (None, 6, 6, 2),
         lambda x, ws: np_conv_transpose(x, ws[0], ws[1], strides=2, padding="same")),
    Case("Conv2DTranspose-same-s1", lambda: layers.Conv2DTranspose(2, (3, 2), padding="same",
                                                                    activation="relu"),
         (4, 5, 3), (None, 4, 5, 2),
         lambda x, ws: np.maximum(np_conv_transpose(x, ws[0], ws[1], padding="same"), 0)),
    Case("Conv2DTranspose-output_padding", lambda: layers.Conv2DTranspose(
        2, 3, strides=2, padding="same", output_padding=0), (3, 4, 2), (None, 5, 7, 2),
        lambda x, ws: np_conv_transpose(x, ws[0], ws[1], strides=2, padding="same", output_padding=0)),
    Case("Conv2DTranspose-output_padding-valid", lambda: layers.Conv2DTranspose(
        2, 3, strides=2, output_padding=1), (3, 2, 2), (None, 8, 6, 2),
        lambda x, ws: np_conv_transpose(x, ws[0], ws[1], strides=2, output_padding=1)),
    Case("Conv2DTranspose-channels_first", lambda: layers.Conv2DTranspose(
        2, 3, strides=2, padding="same", data_format="channels_first"), (3, 3, 4), (None, 2, 6, 8),
        lambda x, ws: cf(np_conv_transpose)(x, ws[0], ws[1], strides=2, padding="same")),
    Case("Conv2DTranspose-dilation", lambda: layers.Conv2DTranspose(2, 2, dilation_rate=2), (3, 4, 2),
         (None, 5, 6, 2), lambda x, ws: np_conv_transpose(x, ws[0], ws[1], dilation=2)),
    # Depthwise / separable
    Case("DepthwiseConv2D-same", lambda: layers.DepthwiseConv2D(3, padding="same"), (5, 6, 3),
         (None, 5, 6, 3), lambda x, ws: np_depthwise(x, ws[0], ws[1], padding="same")),
    Case("DepthwiseConv2D-mult2-s2", lambda: layers.DepthwiseConv2D(3, strides=2, depth_multiplier=2),
         (7, 6, 2), (None, 3, 2, 4), lambda x, ws: np_depthwise(x, ws[0], ws[1], strides=2)),
    Case("DepthwiseConv2D-dilation-nobias", lambda: layers.DepthwiseConv2D(
        2, dilation_rate=2, use_bias=False, depth_multiplier=3), (5, 5, 2), (None, 3, 3, 6),
        lambda x, ws: np_depthwise(x, ws[0], dilation=2)),
    Case("SeparableConv2D-same", lambda: layers.SeparableConv2D(4, 3, padding="same"), (5, 6, 3),
         (None, 5, 6, 4),
         lambda x, ws: np_conv(np_depthwise(x, ws[0], padding="same"), ws[1], ws[2])),
    Case("SeparableConv2D-mult2-s2-relu", lambda: layers.SeparableConv2D(
        3, 3, strides=2, depth_multiplier=2, activation="relu"), (7, 7, 2), (None, 3, 3, 3),
        lambda x, ws: np.maximum(np_conv(np_depthwise(x, ws[0], strides=2), ws[1], ws[2]), 0)),
    # Pooling
    Case("MaxPooling2D", lambda: layers.MaxPooling2D(), (7, 6, 3), (None, 3, 3, 3),
         lambda x, ws: np_pool(x, 2, None, "valid", "max")),
    Case("MaxPooling2D-same-odd", lambda: layers.MaxPooling2D(padding="same"), (7, 5, 2), (None, 4, 3, 2),
         lambda x, ws: np_pool(x, 2, None, "same", "max")),
    Case("MaxPooling2D-3s2-same", lambda: layers.MaxPooling2D(3, strides=2, padding="same"), (8, 7, 2),
         (None, 4, 4, 2), lambda x, ws: np_pool(x, 3, 2, "same", "max")),
    Case("MaxPooling2D-3s1-same", lambda: layers.MaxPooling2D(3, strides=1, padding="same"), (5, 4, 2),
         (None, 5, 4, 2), lambda x, ws: np_pool(x, 3, 1, "same", "max")),
    Case("MaxPooling2D-channels_first", lambda: layers.MaxPooling2D((2, 3), data_format="channels_first"),
         (2, 6, 7), (None, 2, 3, 2), lambda x, ws: cf(np_pool)(x, (2, 3), None, "valid", "max")),
    Case("AveragePooling2D", lambda: layers.AveragePooling2D(), (6, 7, 2), (None, 3, 3, 2),
         lambda x, ws: np_pool(x, 2, None, "valid", "avg")),
    Case("AveragePooling2D-same-odd", lambda: layers.AveragePooling2D(padding="same"), (5, 7, 2),
         (None, 3, 4, 2), lambda x, ws: np_pool(x, 2, None, "same", "avg")),
    Case("AveragePooling2D-3s1-same", lambda: layers.AveragePooling2D(3, strides=1, padding="same"),
         (4, 5, 2), (None, 4, 5, 2), lambda x, ws: np_pool(x, 3, 1, "same", "avg")),
    Case("AveragePooling2D-3s2-same-even", lambda: layers.AveragePooling2D(3, 2, padding="same"),
         (6, 6, 1), (None, 3, 3, 1), lambda x, ws: np_pool(x, 3, 2, "same", "avg")),
    Case("MaxPooling1D", lambda: layers.MaxPooling1D(), (7, 3), (None, 3, 3),
         lambda x, ws: np_pool(x, 2, None, "valid", "max")),
    Case("MaxPooling1D-3s1-same", lambda: layers.MaxPooling1D(3, 1, padding="same"), (6, 2), (None, 6, 2),
         lambda x, ws: np_pool(x, 3, 1, "same", "max")),
    Case("AveragePooling1D", lambda: layers.AveragePooling1D(), (7, 3), (None, 3, 3),
         lambda x, ws: np_pool(x, 2, None, "valid", "avg")),
    Case("AveragePooling1D-3s1-same", lambda: layers.AveragePooling1D(3, 1, padding="same"), (6, 2),
         (None, 6, 2), lambda x, ws: np_pool(x, 3, 1, "same", "avg")),
    Case("MaxPooling2D-2s1-same", lambda: layers.MaxPooling2D(2, 1, padding="same"), (4, 5, 2),
         (None, 4, 5, 2), lambda x, ws: np_pool(x, 2, 1, "same", "max")),
    Case("AveragePooling2D-2s1-same", lambda: layers.AveragePooling2D(2, 1, padding="same"), (4, 5, 2),
         (None, 4, 5, 2), lambda x, ws: np_pool(x, 2, 1, "same", "avg")),
    Case("AveragePooling1D-3s2-same", lambda: layers.AveragePooling1D(3, 2, padding="same"), (8, 2),
         (None, 4, 2), lambda x, ws: np_pool(x, 3, 2, "same", "avg")),
    Case("GlobalMaxPooling2D", lambda: layers.GlobalMaxPooling2D(), (4, 5, 3), (None, 3),
         lambda x, ws: x.max(axis=(1, 2))),
    Case("GlobalMaxPooling2D-keepdims", lambda: layers.GlobalMaxPooling2D(keepdims=True), (4, 5, 3),
         (None, 1, 1, 3), lambda x, ws: x.max(axis=(1, 2), keepdims=True)),
    Case("GlobalAveragePooling2D", lambda: layers.GlobalAveragePooling2D(), (4, 5, 3), (None, 3),
         lambda x, ws: x.mean(axis=(1, 2))),
    Case("GlobalAveragePooling2D-channels_first", lambda: layers.GlobalAveragePooling2D(
        data_format="channels_first", keepdims=True), (3, 4, 5), (None, 3, 1, 1),
        lambda x, ws: x.mean(axis=(2, 3), keepdims=True)),
    Case("GlobalMaxPooling1D", lambda: layers.GlobalMaxPooling1D(), (6, 3), (None, 3),
         lambda x, ws: x.max(axis=1)),
    Case("GlobalAveragePooling1D-keepdims", lambda: layers.GlobalAveragePooling1D(keepdims=True), (6, 3),
         (None, 1, 3), lambda x, ws: x.mean(axis=1, keepdims=True)),
    # Reshaping
    Case("ZeroPadding2D", lambda: layers.ZeroPadding2D(), (3, 4, 2), (None, 5, 6, 2),
         lambda x, ws: np.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)])),
    Case("ZeroPadding2D-asym", lambda: layers.ZeroPadding2D(((1, 2), (0, 3))), (3, 4, 2), (None, 6, 7, 2),
         lambda x, ws: np.pad(x, [(0, 0), (1, 2), (0, 3), (0, 0)])),
    Case("Cropping2D", lambda: layers.Cropping2D(((1, 0), (2, 1))), (5, 6, 2), (None, 4, 3, 2),
         lambda x, ws: x[:, 1:, 2:-1]),
    Case("Cropping2D-int-channels_first", lambda: layers.Cropping2D(1, data_format="channels_first"),
         (2, 5, 4), (None, 2, 3, 2), lambda x, ws: x[:, :, 1:-1, 1:-1]),
    Case("UpSampling2D", lambda: layers.UpSampling2D((2, 3)), (3, 2, 2), (None, 6, 6, 2),
         lambda x, ws: x.repeat(2, axis=1).repeat(3, axis=2)),
    Case("UpSampling2D-channels_first", lambda: layers.UpSampling2D(data_format="channels_first"),
         (2, 3, 2), (None, 2, 6, 4), lambda x, ws: x.repeat(2, axis=2).repeat(2, axis=3)),
    # Normalization (inference mode: moving statistics)
    Case("BatchNormalization", lambda: layers.BatchNormalization(), (4, 5, 3), (None, 4, 5, 3),
         lambda x, ws: np_batchnorm(x, ws[2], ws[3], ws[0], ws[1])),
    Case("BatchNormalization-axis1-noscale", lambda: layers.BatchNormalization(axis=1, scale=False,
                                                                                epsilon=0.01),
         (3, 4), (None, 3, 4), lambda x, ws: np_batchnorm(x, ws[1], ws[2], None, ws[0], 0.01, axis=1)),
    Case("BatchNormalization-nocenter", lambda: layers.BatchNormalization(center=False), (5,), (None, 5),
         lambda x, ws: np_batchnorm(x, ws[1], ws[2], ws[0], None)),
    Case("LayerNormalization", lambda: layers.LayerNormalization(), (4, 6), (None, 4, 6),
         lambda x, ws: np_layernorm(x, [2], ws[0], ws[1])),
    Case("LayerNormalization-axes12", lambda: layers.LayerNormalization(axis=[1, 2]), (3, 4, 2),
         (None, 3, 4, 2), lambda x, ws: np_layernorm(x, [1, 2], ws[0], ws[1])),
    Case("LayerNormalization-axis1-nocenter", lambda: layers.LayerNormalization(axis=1, center=False,
                                                                                 epsilon=1e-5),
         (4, 3), (None, 4, 3), lambda x, ws: np_layernorm(x, [1], ws[0], None, 1e-5)),
    # Noise: identity at inference
    Case("SpatialDropout2D", lambda: layers.SpatialDropout2D(0.5), (3, 3, 2), (None, 3, 3, 2),
         lambda x, ws: x),
    Case("GaussianNoise", lambda: layers.GaussianNoise(0.5), (4,), (None, 4), lambda x, ws: x),
    Case("GaussianDropout", lambda: layers.GaussianDropout(0.3), (4,), (None, 4), lambda x, ws: x),
]


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def randomize_weights(layer, rng):
    """Random values for every weight (biases, BN statistics included), variances > 0."""
    new = []
    for w in layer.weights:
        v = rng.uniform(-1, 1, w.shape)
        if w.name == "moving_variance":
            v = rng.uniform(0.5, 2.0, w.shape)
        new.append(v.astype(np.float32))
    layer.set_weights(new)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_forward(case):
    rng = np.random.default_rng(0)
    inp = kgraph.Input(shape=case.in_shape)
    layer = case.make()
    out = layer(inp)
    assert tuple(out.shape) == case.out_shape
    randomize_weights(layer, rng)
    model = kgraph.models.Model(inp, out)
    x = rng.uniform(-2, 2, (BATCH,) + case.in_shape).astype(np.float32)
    expected = case.ref(x.astype(np.float64), [w.astype(np.float64) for w in layer.get_weights()])
    got = model.predict(x, verbose=0)
    assert got.shape == expected.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, **TOL, err_msg=case.id)

    proto = compile_inference(model)
    onnx.checker.check_model(proto, full_check=True)
    (ref_out,) = ReferenceEvaluator(proto).run(None, {model.input_names()[0]: x})
    np.testing.assert_allclose(ref_out, expected, **TOL, err_msg=f"{case.id}: onnx.reference")


# The layer classes this file checks (for a repository-wide coverage test to import).
COVERED = {"Conv1D", "Conv2D", "Conv2DTranspose", "DepthwiseConv2D", "SeparableConv2D",
           "MaxPooling1D", "MaxPooling2D", "AveragePooling1D", "AveragePooling2D",
           "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalAveragePooling1D",
           "GlobalAveragePooling2D", "ZeroPadding2D", "Cropping2D", "UpSampling2D",
           "BatchNormalization", "LayerNormalization", "SpatialDropout2D", "GaussianNoise",
           "GaussianDropout"}


def test_every_new_layer_has_a_row():
    assert COVERED - {c.id.split("-")[0] for c in CASES} == set()
    assert all(hasattr(layers, n) for n in COVERED)


def test_dynamic_spatial_sizes_at_inference():
    """Fully convolutional: one compiled graph serves any image size."""
    inp = kgraph.Input(shape=(None, None, 2))
    conv = layers.Conv2D(3, 3, padding="same", activation="relu")
    pool = layers.MaxPooling2D()
    out = layers.GlobalAveragePooling2D()(pool(conv(inp)))
    assert out.shape == (None, 3)
    model = kgraph.models.Model(inp, out)
    rng = np.random.default_rng(4)
    k, b = [w.astype(np.float64) for w in conv.get_weights()]
    for size in ((7, 6), (8, 9)):
        x = rng.uniform(-1, 1, (2, *size, 2)).astype(np.float32)
        z = np.maximum(np_conv(x.astype(np.float64), k, b, padding="same"), 0)
        expected = np_pool(z, 2, None, "valid", "max").mean(axis=(1, 2))
        np.testing.assert_allclose(model.predict(x, verbose=0), expected, **TOL)


def test_keras_weight_shapes_and_names():
    inp = kgraph.Input(shape=(8, 8, 4))
    checks = [
        (layers.Conv2D(6, (3, 2), groups=2), [("kernel", (3, 2, 2, 6)), ("bias", (6,))]),
        (layers.Conv2DTranspose(5, 3), [("kernel", (3, 3, 5, 4)), ("bias", (5,))]),
        (layers.DepthwiseConv2D(3, depth_multiplier=2), [("kernel", (3, 3, 4, 2)), ("bias", (8,))]),
        (layers.SeparableConv2D(7, 3, depth_multiplier=2),
         [("depthwise_kernel", (3, 3, 4, 2)), ("pointwise_kernel", (1, 1, 8, 7)), ("bias", (7,))]),
        (layers.BatchNormalization(), [("gamma", (4,)), ("beta", (4,)), ("moving_mean", (4,)),
                                       ("moving_variance", (4,))]),
        (layers.LayerNormalization(), [("gamma", (4,)), ("beta", (4,))]),
    ]
    for layer, expected in checks:
        layer(inp)
        assert [(w.name, w.shape) for w in layer.weights] == expected, type(layer).__name__
    bn = checks[4][0]
    assert [w.name for w in bn.trainable_weights] == ["gamma", "beta"]
    assert [w.name for w in bn.non_trainable_weights] == ["moving_mean", "moving_variance"]
    np.testing.assert_array_equal(bn.get_weights()[3], np.ones(4, np.float32))
    conv = checks[0][0]
    assert np.all(conv.get_weights()[1] == 0)
    limit = math.sqrt(6 / (3 * 2 * 2 + 3 * 2 * 6))  # glorot with receptive-field fans
    assert np.abs(conv.get_weights()[0]).max() <= limit


def test_configs_round_trip():
    for layer in [layers.Conv2D(4, 3, strides=2, padding="same", activation="relu"),
                  layers.Conv1D(2, 5, padding="causal", dilation_rate=2),
                  layers.Conv2DTranspose(3, 2, strides=2, output_padding=1),
                  layers.DepthwiseConv2D(3, depth_multiplier=2),
                  layers.SeparableConv2D(3, 3),
                  layers.MaxPooling2D(3, 2, padding="same"), layers.AveragePooling1D(),
                  layers.GlobalAveragePooling2D(keepdims=True),
                  layers.ZeroPadding2D(((1, 2), (3, 4))), layers.Cropping2D(1), layers.UpSampling2D(3),
                  layers.BatchNormalization(momentum=0.9), layers.LayerNormalization(axis=[1, 2]),
                  layers.SpatialDropout2D(0.2), layers.GaussianNoise(0.1), layers.GaussianDropout(0.2)]:
        cfg = layer.get_config()
        clone = type(layer).from_config(cfg)
        assert clone.get_config() == cfg
    cfg = layers.Conv2D(4, 3).get_config()
    for key in ("filters", "kernel_size", "strides", "padding", "data_format", "dilation_rate",
                "groups", "activation", "use_bias", "kernel_initializer", "bias_initializer"):
        assert key in cfg
    assert cfg["kernel_size"] == (3, 3) and cfg["padding"] == "valid" and cfg["strides"] == (1, 1)
    p = layers.MaxPooling2D().get_config()
    assert p["pool_size"] == (2, 2) and p["strides"] == (2, 2)
    bn = layers.BatchNormalization().get_config()
    assert (bn["axis"], bn["momentum"], bn["epsilon"]) == (-1, 0.99, 1e-3)
    assert layers.LayerNormalization().get_config()["epsilon"] == 1e-3


# ---------------------------------------------------------------------------------------
# Bad input: errors at call time that name the layer
# ---------------------------------------------------------------------------------------
def test_kernel_larger_than_input_with_valid_padding():
    inp = kgraph.Input(shape=(3, 3, 1))
    with pytest.raises(ValueError,
                       match=r"Conv2D 'big_kernel'.*kernel.*larger.*input_shape=\(None, 3, 3, 1\)"):
        layers.Conv2D(2, 5, name="big_kernel")(inp)
    with pytest.raises(ValueError, match=r"MaxPooling2D 'big_pool'.*pool_size=\(4, 4\)"):
        layers.MaxPooling2D(4, name="big_pool")(inp)
    # 'same' padding is fine
    assert layers.Conv2D(2, 5, padding="same")(inp).shape == (None, 3, 3, 2)


def test_wrong_rank():
    inp = kgraph.Input(shape=(8, 8))
    with pytest.raises(ValueError, match=r"Conv2D 'rank_check'.*rank 4.*input_shape=\(None, 8, 8\)"):
        layers.Conv2D(2, 3, name="rank_check")(inp)
    with pytest.raises(ValueError, match=r"MaxPooling2D 'pool_rank'.*rank 4"):
        layers.MaxPooling2D(name="pool_rank")(inp)
    with pytest.raises(ValueError, match=r"Conv1D 'c1'.*rank 3.*input_shape=\(None, 2, 8, 8\)"):
        layers.Conv1D(2, 3, name="c1")(kgraph.Input(shape=(2, 8, 8)))


def test_channels_mismatch_on_built_layer():
    conv = layers.Conv2D(4, 3, name="built_conv")
    conv(kgraph.Input(shape=(8, 8, 3)))
    with pytest.raises(ValueError, match=r"Conv2D 'built_conv'.*3 channels.*input_shape=\(None, 8, 8, 4\)"):
        conv(kgraph.Input(shape=(8, 8, 4)))
    bn = layers.BatchNormalization(name="built_bn")
    bn(kgraph.Input(shape=(4, 4, 3)))
    with pytest.raises(ValueError, match=r"BatchNormalization 'built_bn'.*3 features"):
        bn(kgraph.Input(shape=(4, 4, 5)))
    # a second call with the right channels but another size is fine
    assert conv(kgraph.Input(shape=(10, 9, 3))).shape == (None, 8, 7, 4)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"filters.*Received: filters=0"):
        layers.Conv2D(0, 3)
    with pytest.raises(ValueError, match=r"padding.*Received: padding='full'"):
        layers.Conv2D(2, 3, padding="full")
    with pytest.raises(ValueError, match=r"padding.*Received: padding='causal'"):
        layers.Conv2D(2, 3, padding="causal")
    with pytest.raises(ValueError, match=r"groups=3, filters=4"):
        layers.Conv2D(4, 3, groups=3)
    with pytest.raises(ValueError, match=r"input channels.*groups=2"):
        layers.Conv2D(4, 3, groups=2)(kgraph.Input(shape=(5, 5, 3)))
    with pytest.raises(ValueError, match=r"strides > 1.*dilation_rate > 1"):
        layers.Conv2D(2, 3, strides=2, dilation_rate=2)
    with pytest.raises(ValueError, match=r"output_padding.*strictly less"):
        layers.Conv2DTranspose(2, 3, strides=2, output_padding=2)
    with pytest.raises(ValueError, match=r"kernel_size.*Received: kernel_size=\(3, 3, 3\)"):
        layers.Conv2D(2, (3, 3, 3))
    with pytest.raises(ValueError, match=r"interpolation='bilinear'"):
        layers.UpSampling2D(interpolation="bilinear")
    with pytest.raises(ValueError, match=r"cropping.*input_shape=\(None, 3, 4, 1\)"):
        layers.Cropping2D(((2, 1), (0, 0)))(kgraph.Input(shape=(3, 4, 1)))
    with pytest.raises(ValueError, match=r"Received: rate=1.5"):
        layers.SpatialDropout2D(1.5)


# ---------------------------------------------------------------------------------------
# Noise layers in training mode
# ---------------------------------------------------------------------------------------
def _training_model(layer, shape):
    inp = kgraph.Input(shape=shape)
    return kgraph.models.Model(inp, layer(inp, training=True))


def test_spatial_dropout_drops_whole_feature_maps():
    model = _training_model(layers.SpatialDropout2D(0.5, seed=3), (4, 5, 64))
    x = np.ones((8, 4, 5, 64), np.float32)
    y = model.predict(x, verbose=0)
    per_map = y.reshape(8, 20, 64)
    assert np.all(per_map == per_map[:, :1, :])  # constant over space per (sample, channel)
    assert set(np.unique(y)) <= {0.0, 2.0}
    assert 0.35 < (per_map[:, 0] == 0).mean() < 0.65
    y2 = model.predict(x, verbose=0)
    assert not np.array_equal(y, y2), "a fresh mask on every run"


def test_gaussian_noise_and_dropout_statistics():
    x = np.full((50, 400), 2.0, np.float32)
    noisy = _training_model(layers.GaussianNoise(0.3, seed=1), (400,)).predict(x, verbose=0)
    d = noisy - x
    assert abs(d.mean()) < 0.01 and abs(d.std() - 0.3) < 0.01
    model = _training_model(layers.GaussianDropout(0.2, seed=2), (400,))
    ratio = model.predict(x, verbose=0) / x
    assert abs(ratio.mean() - 1) < 0.01 and abs(ratio.std() - math.sqrt(0.2 / 0.8)) < 0.01
    assert not np.array_equal(model.predict(x, verbose=0), model.predict(x, verbose=0))


# ---------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------
def test_lenet_on_digits_reaches_97_percent():
    from kgraph.datasets import digits
    kgraph.utils.set_random_seed(1)
    (x_train, y_train), (x_test, y_test) = digits.load_data()
    x_train = x_train.reshape(-1, 8, 8, 1).astype(np.float32) / 16.0
    x_test = x_test.reshape(-1, 8, 8, 1).astype(np.float32) / 16.0
    model = kgraph.Sequential([
        kgraph.Input(shape=(8, 8, 1)),
        layers.Conv2D(16, 3, padding="same", activation="relu"),
        layers.Conv2D(32, 3, activation="relu"),
        layers.MaxPooling2D(),
        layers.Dropout(0.25),
        layers.Flatten(),
        layers.Dense(64, activation="relu"),
        layers.Dropout(0.25),
        layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=15, batch_size=32, verbose=0)
    loss, acc = model.evaluate(x_test, y_test, verbose=0)
    pred_acc = (model.predict(x_test, verbose=0).argmax(-1) == y_test).mean()
    assert acc >= 0.97 and abs(pred_acc - acc) < 1e-6, (loss, acc)


def test_batchnorm_moving_statistics_after_one_epoch():
    """Conv (frozen, so its output is known) -> BN -> Flatten -> Dense: after one epoch
    with shuffle=False the moving statistics follow Keras's update batch by batch."""
    kgraph.utils.set_random_seed(2)
    rng = np.random.default_rng(2)
    x = rng.normal(1.0, 2.0, (70, 6, 6, 2)).astype(np.float32)
    y = rng.integers(0, 3, 70)
    conv = layers.Conv2D(4, 3, trainable=False)
    bn = layers.BatchNormalization(momentum=0.9)
    model = kgraph.Sequential([kgraph.Input(shape=(6, 6, 2)), conv, bn, layers.Flatten(),
                               layers.Dense(3, activation="softmax")])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    kernel, bias = [w.astype(np.float64) for w in conv.get_weights()]
    features = np_conv(x.astype(np.float64), kernel, bias)
    mm, mv = np.zeros(4), np.ones(4)
    for i in range(0, 70, 32):  # batch_size 32, last partial batch kept
        batch = features[i:i + 32]
        mean, var = batch.mean(axis=(0, 1, 2)), batch.var(axis=(0, 1, 2))
        mm = mm * 0.9 + mean * (1 - 0.9)
        mv = mv * 0.9 + var * (1 - 0.9)
    model.fit(x, y, epochs=1, batch_size=32, shuffle=False, verbose=0)
    gamma, beta, got_mm, got_mv = bn.get_weights()
    np.testing.assert_allclose(got_mm, mm, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(got_mv, mv, atol=1e-5, rtol=1e-5)
    assert not np.allclose(gamma, 1.0), "gamma is trained"
    # inference uses the moving statistics
    k2, b2 = [w.astype(np.float64) for w in model.layers[-1].get_weights()]
    feats = np_batchnorm(features, got_mm.astype(np.float64), got_mv.astype(np.float64),
                         gamma.astype(np.float64), beta.astype(np.float64))
    expected = _softmax(feats.reshape(70, -1) @ k2 + b2)
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, atol=1e-5, rtol=1e-4)


def _small_cnn_forward(x, onehot, ws):
    """Conv(3, 3x3, s1, same) -> BN(training) -> ReLU -> MaxPool 2 -> Flatten -> Dense(softmax) -> CE."""
    k, b, gamma, beta, _, _, dk, db = ws
    z = np_conv(x, k, b, padding="same")
    mean, var = z.mean(axis=(0, 1, 2)), z.var(axis=(0, 1, 2))
    z = np.maximum(np_batchnorm(z, mean, var, gamma, beta), 0)
    z = np_pool(z, 2, None, "valid", "max").reshape(len(x), -1)
    p = np.clip(_softmax(z @ dk + db), 1e-7, 1 - 1e-7)
    return -(onehot * np.log(p)).sum(-1).mean()


def test_one_sgd_step_matches_finite_differences():
    kgraph.utils.set_random_seed(3)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(6, 5, 4, 2)).astype(np.float32)
    y = rng.integers(0, 3, 6)
    model = kgraph.Sequential([
        kgraph.Input(shape=(5, 4, 2)),
        layers.Conv2D(3, 3, padding="same"),
        layers.BatchNormalization(),
        layers.Activation("relu"),
        layers.MaxPooling2D(),
        layers.Flatten(),
        layers.Dense(3, activation="softmax"),
    ])
    model.layers[1].set_weights([rng.uniform(0.5, 1.5, 3).astype(np.float32),
                                 rng.uniform(-0.5, 0.5, 3).astype(np.float32),
                                 np.zeros(3, np.float32), np.ones(3, np.float32)])
    lr = 0.1
    model.compile(optimizer=kgraph.optimizers.SGD(learning_rate=lr),
                  loss="sparse_categorical_crossentropy")
    before = [w.astype(np.float64) for w in model.get_weights()]
    model.train_on_batch(x, y)
    after = [w.astype(np.float64) for w in model.get_weights()]
    onehot = np.eye(3)[y]
    xd = x.astype(np.float64)
    h = 1e-6
    for i in (0, 1, 2, 3, 6, 7):  # trainable: conv kernel/bias, gamma, beta, dense kernel/bias
        numeric = np.zeros_like(before[i])
        for idx in np.ndindex(before[i].shape):
            plus = [w.copy() for w in before]
            minus = [w.copy() for w in before]
            plus[i][idx] += h
            minus[i][idx] -= h
            numeric[idx] = (_small_cnn_forward(xd, onehot, plus)
                            - _small_cnn_forward(xd, onehot, minus)) / (2 * h)
        applied = (before[i] - after[i]) / lr
        np.testing.assert_allclose(applied, numeric, atol=2e-5, rtol=1e-3, err_msg=f"weight {i}")
    # the conv bias before BN has a zero gradient (BN removes the mean)
    np.testing.assert_allclose((before[1] - after[1]) / lr, 0, atol=2e-5)


# ---------------------------------------------------------------------------------------
# Optional: the NumPy references above against real Keras
# ---------------------------------------------------------------------------------------
_HAVE_KERAS = bool(importlib.util.find_spec("keras") and importlib.util.find_spec("torch"))


@pytest.mark.skipif(not _HAVE_KERAS, reason="real Keras with the torch backend not installed "
                                            "(optional cross-check of the NumPy references)")
def test_numpy_references_match_real_keras():
    import subprocess
    import sys
    code = f"import sys; sys.path.insert(0, {os.path.dirname(__file__)!r}); " \
           "import test_conv_layers as t; t._keras_crosscheck()"
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr


def _keras_crosscheck():
    """Runs in a separate process (Keras's backend is fixed at import)."""
    import keras
    rng = np.random.default_rng(0)
    checks = [
        (lambda: keras.layers.Conv2D(3, 3, strides=2, padding="same"), (7, 6, 2),
         lambda x, ws: np_conv(x, ws[0], ws[1], strides=2, padding="same")),
        (lambda: keras.layers.Conv2D(3, (2, 3), padding="same", dilation_rate=2), (6, 7, 2),
         lambda x, ws: np_conv(x, ws[0], ws[1], padding="same", dilation=2)),
        (lambda: keras.layers.Conv2D(4, 3, groups=2), (5, 6, 4),
         lambda x, ws: np_conv(x, ws[0], ws[1], groups=2)),
        (lambda: keras.layers.Conv1D(3, 3, padding="causal", dilation_rate=2), (8, 2),
         lambda x, ws: np_conv(x, ws[0], ws[1], padding="causal", dilation=2)),
        (lambda: keras.layers.Conv2DTranspose(3, 3, strides=2), (4, 3, 2),
         lambda x, ws: np_conv_transpose(x, ws[0], ws[1], strides=2)),
        (lambda: keras.layers.Conv2DTranspose(3, 3, strides=2, padding="same"), (3, 4, 2),
         lambda x, ws: np_conv_transpose(x, ws[0], ws[1], strides=2, padding="same")),
        (lambda: keras.layers.Conv2DTranspose(2, 4, strides=2, padding="same"), (3, 3, 2),
         lambda x, ws: np_conv_transpose(x, ws[0], ws[1], strides=2, padding="same")),
        (lambda: keras.layers.Conv2DTranspose(2, 2, strides=3), (3, 2, 2),
         lambda x, ws: np_conv_transpose(x, ws[0], ws[1], strides=3)),
        (lambda: keras.layers.Conv2DTranspose(2, 3, strides=2, output_padding=1), (3, 2, 2),
         lambda x, ws: np_conv_transpose(x, ws[0], ws[1], strides=2, output_padding=1)),
        (lambda: keras.layers.DepthwiseConv2D(3, strides=2, depth_multiplier=2), (7, 6, 2),
         lambda x, ws: np_depthwise(x, ws[0], ws[1], strides=2)),
        (lambda: keras.layers.SeparableConv2D(4, 3, padding="same", depth_multiplier=2), (5, 6, 3),
         lambda x, ws: np_conv(np_depthwise(x, ws[0], padding="same"), ws[1], ws[2])),
        (lambda: keras.layers.MaxPooling2D(padding="same"), (7, 5, 2),
         lambda x, ws: np_pool(x, 2, None, "same", "max")),
        (lambda: keras.layers.MaxPooling2D(3, 2, padding="same"), (8, 7, 2),
         lambda x, ws: np_pool(x, 3, 2, "same", "max")),
        (lambda: keras.layers.AveragePooling2D(2, padding="same"), (5, 7, 2),
         lambda x, ws: np_pool(x, 2, None, "same", "avg")),
        (lambda: keras.layers.AveragePooling2D(3, 1, padding="same"), (4, 5, 2),
         lambda x, ws: np_pool(x, 3, 1, "same", "avg")),
        (lambda: keras.layers.BatchNormalization(), (4, 5, 3),
         lambda x, ws: np_batchnorm(x, ws[2], ws[3], ws[0], ws[1])),
        # trailing axes: Keras's torch backend mishandles other multi-axis cases
        (lambda: keras.layers.LayerNormalization(axis=[2, 3]), (3, 4, 2),
         lambda x, ws: np_layernorm(x, [2, 3], ws[0], ws[1])),
    ]
    for make, shape, ref in checks:
        layer = make()
        x = rng.uniform(-2, 2, (2,) + shape).astype(np.float32)
        layer.build((None,) + shape)
        ws = [rng.uniform(0.5, 1.5, w.shape).astype(np.float32) for w in layer.get_weights()]
        layer.set_weights(ws)
        got = np.asarray(keras.ops.convert_to_numpy(layer(x)))
        expected = ref(x.astype(np.float64), [w.astype(np.float64) for w in ws])
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4, err_msg=type(layer).__name__)
