"""Every layer and every activation, table-driven, against NumPy references.

Each row of CASES builds a Functional model around one layer (or functional merge
form), checks the symbolic output shape, compares `model.predict` with a float64
NumPy reference computed from the layer's own weights (`get_weights()`) with the
Keras 3 formulas, and exports the ONNX inference graph: `onnx.checker` (full check)
must pass and `onnx.reference` (an independent implementation of the ONNX spec)
must agree with onnxruntime.

`test_table_covers_everything` fails when a layer class, a functional merge form or
an activation name is added to kgraph without a row here.

The initializer tests at the end check Keras 3's distributions statistically on a
256x256 kernel and their reproducibility under `kgraph.utils.set_random_seed`.
"""
from __future__ import annotations

import inspect
import json
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import onnx
import pytest
from onnx.reference import ReferenceEvaluator

import kgraph
from kgraph import activations, initializers, layers
from kgraph.runtime.inference import compile_inference

TOL = dict(rtol=1e-5, atol=1e-5)
BATCH = 5

# ---------------------------------------------------------------------------------------
# NumPy references (float64), Keras 3 formulas
# ---------------------------------------------------------------------------------------
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
_erf = np.vectorize(math.erf)


def np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def np_softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def np_log_softmax(x, axis=-1):
    m = x.max(axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


def np_elu(x, alpha=1.0):
    return np.where(x > 0, x, alpha * (np.exp(x) - 1.0))


def np_leaky(x, slope):
    return np.where(x >= 0, x, slope * x)


def np_relu(x, negative_slope=0.0, max_value=None, threshold=0.0):
    """Keras 3 ReLU: x if threshold < x < max_value, max_value above it,
    negative_slope * (x - threshold) below the threshold (0 at x == threshold: Keras's
    implementation compares with `greater`, checked against keras 3.15.1)."""
    pos = np.where(x > threshold, x, 0.0)
    if max_value is not None:
        pos = np.minimum(pos, max_value)
    return pos + negative_slope * np.minimum(x - threshold, 0.0)


ACT_REF: dict[str, Callable] = {
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, 0.0),
    "sigmoid": np_sigmoid,
    "tanh": np.tanh,
    "softmax": np_softmax,
    "log_softmax": np_log_softmax,
    "elu": np_elu,
    "selu": lambda x: SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * (np.exp(x) - 1.0)),
    "softplus": lambda x: np.log1p(np.exp(x)),
    "softsign": lambda x: x / (np.abs(x) + 1.0),
    "swish": lambda x: x * np_sigmoid(x),
    "silu": lambda x: x * np_sigmoid(x),
    "gelu": lambda x: 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0))),  # Keras 3: approximate=False
    "leaky_relu": lambda x: np_leaky(x, 0.2),  # keras.activations.leaky_relu default 0.2
    "relu6": lambda x: np.clip(x, 0.0, 6.0),
    "hard_sigmoid": lambda x: np.clip(x / 6.0 + 0.5, 0.0, 1.0),
    "exponential": np.exp,
}


def np_l2_normalize(x, axis):
    return x / np.sqrt(np.maximum((x * x).sum(axis=axis, keepdims=True), 1e-12))


def np_batch_dot(a, b, axes):
    """Keras `Dot`: contract a's axes[0] with b's axes[1], per sample."""
    a = np.moveaxis(a, axes[0], -1)
    b = np.moveaxis(b, axes[1], -1)
    if a.ndim == 2 and b.ndim == 2:
        return (a * b).sum(-1, keepdims=True)
    return np.einsum("bik,bjk->bij", a, b)


# ---------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------
@dataclass
class Case:
    id: str
    covers: tuple                 # names in kgraph.layers / kgraph.activations this row exercises
    make: Callable                # () -> callable applied to the input tensor(s)
    in_shapes: list               # shapes without the batch dimension
    out_shape: tuple              # expected symbolic output shape (batch None)
    ref: Callable                 # (inputs: list[float64 arrays], weights: list[arrays]) -> expected
    data: Callable | None = None  # (rng, shapes) -> list of arrays; default uniform(-3, 3)
    setup: Callable | None = None  # (layer) -> None, e.g. set_weights, after building
    dtypes: tuple | None = None
    list_input: bool = False      # the layer takes a list of tensors


def dense_ref(act):
    def ref(xs, ws):
        y = xs[0] @ ws[0].astype(np.float64)
        if len(ws) > 1:
            y = y + ws[1]
        return ACT_REF[act](y)
    return ref


def _nonzero_bias(layer):
    """Non-zero biases so that a dropped or misplaced bias shows in the numbers."""
    ws = layer.get_weights()
    if len(ws) == 2:
        ws[1] = np.linspace(-0.5, 0.5, ws[1].size, dtype=np.float32)
    layer.set_weights(ws)


def merge_case(name, cls_name, fn_name, n_inputs, ref, shapes=None):
    shapes = shapes or [(3,)] * n_inputs
    return [
        Case(f"{cls_name}", (cls_name,), lambda: getattr(layers, cls_name)(), shapes, (None, 3),
             lambda xs, ws: ref(xs), list_input=True),
        Case(f"{fn_name}", (fn_name,), lambda: getattr(layers, fn_name), shapes, (None, 3),
             lambda xs, ws: ref(xs), list_input=True),
    ]


def _embedding_data(rng, shapes):
    return [rng.integers(0, 10, (BATCH,) + shapes[0]).astype(np.int32)]


def _relu_data(rng, shapes):
    # keeps clear of the threshold 0.5 and max_value 2 (the boundaries have their own row)
    x = rng.uniform(-3, 3, (BATCH,) + shapes[0])
    return [np.where(np.abs(x - 0.5) < 0.05, 0.8, np.where(np.abs(x - 2.0) < 0.05, 2.5, x))]


def _prelu_setup(layer):
    (alpha,) = layer.get_weights()
    layer.set_weights([np.linspace(-0.5, 0.8, alpha.size, dtype=np.float32).reshape(alpha.shape)])


CASES: list[Case] = [
    # --- InputLayer: a model whose output is its input ---------------------------------
    Case("InputLayer", ("InputLayer", "Input"), None, [(4,)], (None, 4), lambda xs, ws: xs[0]),
    # --- Dense ---------------------------------------------------------------------------
    Case("Dense", ("Dense",), lambda: layers.Dense(3), [(4,)], (None, 3), dense_ref("linear"),
         setup=_nonzero_bias),
    Case("Dense-no_bias", ("Dense",), lambda: layers.Dense(3, use_bias=False), [(4,)], (None, 3),
         dense_ref("linear")),
    Case("Dense-rank3", ("Dense",), lambda: layers.Dense(5, activation="tanh"), [(2, 4)],
         (None, 2, 5), dense_ref("tanh"), setup=_nonzero_bias),
    Case("Dense-rank4", ("Dense",), lambda: layers.Dense(2), [(2, 3, 4)], (None, 2, 3, 2),
         dense_ref("linear"), setup=_nonzero_bias),
    *[Case(f"Dense-{act}", ("Dense", act), (lambda a=act: layers.Dense(6, activation=a)), [(4,)],
           (None, 6), dense_ref(act), setup=_nonzero_bias) for act in ACT_REF],
    Case("Dense-callable_activation", ("Dense",), lambda: layers.Dense(3, activation=activations.tanh),
         [(4,)], (None, 3), dense_ref("tanh"), setup=_nonzero_bias),
    # --- Activation by name (the activations table) ---------------------------------------
    *[Case(f"Activation-{act}", ("Activation", act), (lambda a=act: layers.Activation(a)), [(3, 5)],
           (None, 3, 5), (lambda xs, ws, a=act: ACT_REF[a](xs[0]))) for act in ACT_REF],
    Case("Activation-None", ("Activation",), lambda: layers.Activation(None), [(4,)], (None, 4),
         lambda xs, ws: xs[0]),
    # --- core layers ------------------------------------------------------------------------
    Case("Dropout", ("Dropout",), lambda: layers.Dropout(0.5), [(4,)], (None, 4),
         lambda xs, ws: xs[0]),
    Case("Dropout-in_chain", ("Dropout",),
         lambda: (lambda t: layers.Dropout(0.9)(layers.Activation("tanh")(t))), [(4,)], (None, 4),
         lambda xs, ws: np.tanh(xs[0])),
    Case("Flatten", ("Flatten",), lambda: layers.Flatten(), [(3, 4)], (None, 12),
         lambda xs, ws: xs[0].reshape(len(xs[0]), -1)),
    Case("Flatten-rank4", ("Flatten",), lambda: layers.Flatten(), [(2, 3, 2)], (None, 12),
         lambda xs, ws: xs[0].reshape(len(xs[0]), -1)),
    Case("Flatten-rank2", ("Flatten",), lambda: layers.Flatten(), [(4,)], (None, 4),
         lambda xs, ws: xs[0]),
    Case("Flatten-channels_first", ("Flatten",), lambda: layers.Flatten(data_format="channels_first"),
         [(2, 3, 4)], (None, 24), lambda xs, ws: xs[0].transpose(0, 2, 3, 1).reshape(len(xs[0]), -1)),
    Case("Reshape", ("Reshape",), lambda: layers.Reshape((3, 4)), [(12,)], (None, 3, 4),
         lambda xs, ws: xs[0].reshape(len(xs[0]), 3, 4)),
    Case("Reshape-minus1", ("Reshape",), lambda: layers.Reshape((-1, 3)), [(2, 6)], (None, 4, 3),
         lambda xs, ws: xs[0].reshape(len(xs[0]), -1, 3)),
    Case("Reshape-minus1_last", ("Reshape",), lambda: layers.Reshape((2, -1)), [(12,)], (None, 2, 6),
         lambda xs, ws: xs[0].reshape(len(xs[0]), 2, -1)),
    Case("Reshape-flat", ("Reshape",), lambda: layers.Reshape((-1,)), [(3, 4)], (None, 12),
         lambda xs, ws: xs[0].reshape(len(xs[0]), -1)),
    Case("Reshape-dynamic_dim", ("Reshape",), lambda: layers.Reshape((2, -1)), [(None,)], (None, 2, None),
         lambda xs, ws: xs[0].reshape(len(xs[0]), 2, -1),
         data=lambda rng, s: [rng.uniform(-3, 3, (BATCH, 6))]),
    Case("Permute", ("Permute",), lambda: layers.Permute((2, 1)), [(3, 4)], (None, 4, 3),
         lambda xs, ws: xs[0].transpose(0, 2, 1)),
    Case("Permute-rank4", ("Permute",), lambda: layers.Permute((3, 1, 2)), [(2, 3, 4)], (None, 4, 2, 3),
         lambda xs, ws: xs[0].transpose(0, 3, 1, 2)),
    Case("RepeatVector", ("RepeatVector",), lambda: layers.RepeatVector(3), [(4,)], (None, 3, 4),
         lambda xs, ws: np.repeat(xs[0][:, None, :], 3, axis=1)),
    Case("RepeatVector-dynamic_features", ("RepeatVector",), lambda: layers.RepeatVector(2), [(None,)],
         (None, 2, None), lambda xs, ws: np.repeat(xs[0][:, None, :], 2, axis=1),
         data=lambda rng, s: [rng.uniform(-3, 3, (BATCH, 3))]),
    Case("Embedding", ("Embedding",), lambda: layers.Embedding(10, 6), [(7,)], (None, 7, 6),
         lambda xs, ws: ws[0][xs[0].astype(np.int64)], data=_embedding_data, dtypes=("int32",)),
    Case("Embedding-int64", ("Embedding",), lambda: layers.Embedding(10, 3), [(2, 3)], (None, 2, 3, 3),
         lambda xs, ws: ws[0][xs[0].astype(np.int64)],
         data=lambda rng, s: [rng.integers(0, 10, (BATCH,) + s[0]).astype(np.int64)], dtypes=("int64",)),
    Case("Identity", ("Identity",), lambda: layers.Identity(), [(4,)], (None, 4), lambda xs, ws: xs[0]),
    # --- merges -------------------------------------------------------------------------------
    Case("Concatenate-axis-1", ("Concatenate",), lambda: layers.Concatenate(axis=-1), [(3,), (5,)],
         (None, 8), lambda xs, ws: np.concatenate(xs, axis=-1), list_input=True),
    Case("Concatenate-axis1", ("Concatenate",), lambda: layers.Concatenate(axis=1), [(2, 3), (4, 3)],
         (None, 6, 3), lambda xs, ws: np.concatenate(xs, axis=1), list_input=True),
    Case("Concatenate-3_inputs", ("Concatenate",), lambda: layers.Concatenate(), [(2, 1), (2, 3), (2, 2)],
         (None, 2, 6), lambda xs, ws: np.concatenate(xs, axis=-1), list_input=True),
    Case("concatenate-axis-1", ("concatenate",), lambda: layers.concatenate, [(3,), (5,)], (None, 8),
         lambda xs, ws: np.concatenate(xs, axis=-1), list_input=True),
    Case("concatenate-axis1", ("concatenate",), lambda: (lambda t: layers.concatenate(t, axis=1)),
         [(2, 3), (4, 3)], (None, 6, 3), lambda xs, ws: np.concatenate(xs, axis=1), list_input=True),
    *merge_case("add", "Add", "add", 3, lambda xs: xs[0] + xs[1] + xs[2]),
    *merge_case("subtract", "Subtract", "subtract", 2, lambda xs: xs[0] - xs[1]),
    *merge_case("multiply", "Multiply", "multiply", 3, lambda xs: xs[0] * xs[1] * xs[2]),
    *merge_case("average", "Average", "average", 3, lambda xs: (xs[0] + xs[1] + xs[2]) / 3.0),
    *merge_case("maximum", "Maximum", "maximum", 3, lambda xs: np.maximum(np.maximum(xs[0], xs[1]), xs[2])),
    *merge_case("minimum", "Minimum", "minimum", 3, lambda xs: np.minimum(np.minimum(xs[0], xs[1]), xs[2])),
    Case("Add-broadcast_batch_rank3", ("Add",), lambda: layers.Add(), [(2, 3), (2, 3)], (None, 2, 3),
         lambda xs, ws: xs[0] + xs[1], list_input=True),
    Case("Dot-rank2", ("Dot",), lambda: layers.Dot(axes=1), [(4,), (4,)], (None, 1),
         lambda xs, ws: np_batch_dot(xs[0], xs[1], (1, 1)), list_input=True),
    Case("Dot-rank2-normalize", ("Dot",), lambda: layers.Dot(axes=-1, normalize=True), [(4,), (4,)],
         (None, 1), lambda xs, ws: np_batch_dot(np_l2_normalize(xs[0], 1), np_l2_normalize(xs[1], 1), (1, 1)),
         list_input=True),
    Case("Dot-rank3-axes22", ("Dot",), lambda: layers.Dot(axes=(2, 2)), [(3, 4), (5, 4)], (None, 3, 5),
         lambda xs, ws: np_batch_dot(xs[0], xs[1], (2, 2)), list_input=True),
    Case("Dot-rank3-axes21", ("Dot",), lambda: layers.Dot(axes=(2, 1)), [(3, 4), (4, 5)], (None, 3, 5),
         lambda xs, ws: np_batch_dot(xs[0], xs[1], (2, 1)), list_input=True),
    Case("Dot-rank3-axes11", ("Dot",), lambda: layers.Dot(axes=1), [(4, 3), (4, 5)], (None, 3, 5),
         lambda xs, ws: np_batch_dot(xs[0], xs[1], (1, 1)), list_input=True),
    Case("Dot-rank3-normalize", ("Dot",), lambda: layers.Dot(axes=(2, 2), normalize=True),
         [(3, 4), (5, 4)], (None, 3, 5),
         lambda xs, ws: np_batch_dot(np_l2_normalize(xs[0], 2), np_l2_normalize(xs[1], 2), (2, 2)),
         list_input=True),
    Case("Dot-rank2_rank3", ("Dot",), lambda: layers.Dot(axes=(1, 1)), [(4,), (4, 5)], (None, 5),
         lambda xs, ws: np.einsum("bk,bkj->bj", xs[0], xs[1]), list_input=True),
    Case("Dot-rank3_rank2", ("Dot",), lambda: layers.Dot(axes=(2, 1)), [(3, 4), (4,)], (None, 3),
         lambda xs, ws: np.einsum("bik,bk->bi", xs[0], xs[1]), list_input=True),
    Case("dot", ("dot",), lambda: (lambda t: layers.dot(t, axes=(2, 2))), [(3, 4), (5, 4)], (None, 3, 5),
         lambda xs, ws: np_batch_dot(xs[0], xs[1], (2, 2)), list_input=True),
    # --- activation layers --------------------------------------------------------------------
    Case("ReLU", ("ReLU",), lambda: layers.ReLU(), [(3, 4)], (None, 3, 4),
         lambda xs, ws: np_relu(xs[0])),
    Case("ReLU-max_value", ("ReLU",), lambda: layers.ReLU(max_value=2.0), [(6,)], (None, 6),
         lambda xs, ws: np_relu(xs[0], max_value=2.0), data=_relu_data),
    Case("ReLU-max_value6", ("ReLU",), lambda: layers.ReLU(max_value=6.0), [(6,)], (None, 6),
         lambda xs, ws: np_relu(xs[0], max_value=6.0),
         data=lambda rng, s: [rng.uniform(-9, 9, (BATCH,) + s[0])]),
    Case("ReLU-negative_slope", ("ReLU",), lambda: layers.ReLU(negative_slope=0.1), [(6,)], (None, 6),
         lambda xs, ws: np_relu(xs[0], negative_slope=0.1), data=_relu_data),
    Case("ReLU-threshold", ("ReLU",), lambda: layers.ReLU(threshold=0.5), [(6,)], (None, 6),
         lambda xs, ws: np_relu(xs[0], threshold=0.5), data=_relu_data),
    Case("ReLU-all", ("ReLU",), lambda: layers.ReLU(max_value=2.0, negative_slope=0.1, threshold=0.5),
         [(6,)], (None, 6), lambda xs, ws: np_relu(xs[0], 0.1, 2.0, 0.5), data=_relu_data),
    Case("ReLU-slope_threshold", ("ReLU",), lambda: layers.ReLU(negative_slope=0.2, threshold=0.5),
         [(6,)], (None, 6), lambda xs, ws: np_relu(xs[0], 0.2, None, 0.5), data=_relu_data),
    Case("ReLU-at_threshold", ("ReLU",), lambda: layers.ReLU(negative_slope=0.1, threshold=0.5), [(4,)],
         (None, 4), lambda xs, ws: np_relu(xs[0], 0.1, None, 0.5),  # Keras 3: 0 at x == threshold
         data=lambda rng, s: [np.array([[0.5, 0.25, 1.0, -1.0]] * BATCH)]),
    Case("LeakyReLU", ("LeakyReLU",), lambda: layers.LeakyReLU(), [(6,)], (None, 6),
         lambda xs, ws: np_leaky(xs[0], 0.3)),  # Keras 3 layer default negative_slope=0.3
    Case("LeakyReLU-0.1", ("LeakyReLU",), lambda: layers.LeakyReLU(negative_slope=0.1), [(6,)], (None, 6),
         lambda xs, ws: np_leaky(xs[0], 0.1)),
    Case("ELU", ("ELU",), lambda: layers.ELU(), [(6,)], (None, 6), lambda xs, ws: np_elu(xs[0], 1.0)),
    Case("ELU-alpha", ("ELU",), lambda: layers.ELU(alpha=0.5), [(6,)], (None, 6),
         lambda xs, ws: np_elu(xs[0], 0.5)),
    Case("Softmax", ("Softmax",), lambda: layers.Softmax(), [(3, 4)], (None, 3, 4),
         lambda xs, ws: np_softmax(xs[0], -1)),
    Case("Softmax-axis1", ("Softmax",), lambda: layers.Softmax(axis=1), [(3, 4)], (None, 3, 4),
         lambda xs, ws: np_softmax(xs[0], 1)),
    Case("Softmax-axes12", ("Softmax",), lambda: layers.Softmax(axis=(1, 2)), [(3, 4)], (None, 3, 4),
         lambda xs, ws: np_softmax(xs[0].reshape(len(xs[0]), -1), -1).reshape(xs[0].shape)),
    Case("PReLU", ("PReLU",), lambda: layers.PReLU(), [(6,)], (None, 6),
         lambda xs, ws: np.maximum(xs[0], 0) + ws[0] * np.minimum(xs[0], 0), setup=_prelu_setup),
    Case("PReLU-shared_axes", ("PReLU",), lambda: layers.PReLU(shared_axes=[1]), [(3, 4)], (None, 3, 4),
         lambda xs, ws: np.maximum(xs[0], 0) + ws[0] * np.minimum(xs[0], 0), setup=_prelu_setup),
]


# ---------------------------------------------------------------------------------------
# Running a row
# ---------------------------------------------------------------------------------------
def build_case(case: Case, seed=0):
    rng = np.random.default_rng(seed)
    dtypes = case.dtypes or ("float32",) * len(case.in_shapes)
    inputs = [kgraph.Input(shape=s, dtype=d) for s, d in zip(case.in_shapes, dtypes)]
    if case.make is None:
        out, layer = inputs[0], None
    else:
        fn = case.make()
        out = fn(inputs if case.list_input else inputs[0])
        layer = out._history[0]
    if case.setup is not None:
        case.setup(layer)
    model = kgraph.models.Model(inputs if len(inputs) > 1 else inputs[0], out)
    if case.data is not None:
        xs = [np.asarray(x, d) for x, d in zip(case.data(rng, case.in_shapes), dtypes)]
    else:
        xs = [rng.uniform(-3, 3, (BATCH,) + s).astype(np.float32) for s in case.in_shapes]
    return model, layer, out, xs


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_layer(case):
    model, layer, out, xs = build_case(case)
    assert tuple(out.shape) == case.out_shape
    weights = layer.get_weights() if layer is not None else []
    expected = case.ref([x.astype(np.float64) if x.dtype.kind == "f" else x for x in xs],
                        [w.astype(np.float64) for w in weights])
    got = model.predict(xs if len(xs) > 1 else xs[0], verbose=0)
    assert got.shape == expected.shape
    assert all(d is None or d == g for d, g in zip(case.out_shape[1:], got.shape[1:]))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, **TOL, err_msg=case.id)

    # ONNX inference graph: valid under the full checker and identical under the
    # reference evaluator and onnxruntime.
    proto = compile_inference(model)
    onnx.checker.check_model(proto, full_check=True)
    feeds = dict(zip(model.input_names(), xs))
    (ref_out,) = ReferenceEvaluator(proto).run(None, feeds)
    np.testing.assert_allclose(ref_out, got, **TOL, err_msg=f"{case.id}: onnx.reference vs onnxruntime")
    assert [i.name for i in proto.graph.input] == model.input_names()
    assert [o.name for o in proto.graph.output] == model.output_names()

    # get_config / from_config: the same layer again, JSON-serialisable config
    if layer is not None and len(model.layers) == len(model.inputs) + 1:
        cfg = json.loads(json.dumps(layer.get_config()))
        clone = type(layer).from_config({**cfg, "name": cfg["name"] + "_clone"})
        assert type(clone) is type(layer)
        ins = [kgraph.Input(shape=i.shape[1:], dtype=i.dtype) for i in model.inputs]
        cout = clone(ins if case.list_input else ins[0])
        assert tuple(cout.shape) == case.out_shape
        clone.set_weights(weights)
        cmodel = kgraph.models.Model(ins if len(ins) > 1 else ins[0], cout)
        np.testing.assert_allclose(cmodel.predict(xs if len(xs) > 1 else xs[0], verbose=0), got, **TOL,
                                   err_msg=f"{case.id}: from_config(get_config())")


def test_table_covers_everything():
    """Every exported layer has rows here or in the convolution / recurrent tables."""
    from tests import test_conv_layers, test_recurrent
    covered = {name for c in CASES for name in c.covers} | test_conv_layers.COVERED | test_recurrent.COVERED
    exported = {name for name, obj in vars(layers).items()
                if not name.startswith("_") and (inspect.isclass(obj) or inspect.isfunction(obj))
                and obj is not layers.Layer}
    assert exported - covered == set(), "layers without a test row"
    assert set(activations._BY_NAME) - covered == set(), "activations without a test row"
    assert set(activations._BY_NAME) == set(ACT_REF)


def test_layer_eager_call_matches_reference():
    """`layer(numpy)` runs the layer on concrete data (one-layer model)."""
    x = np.random.default_rng(3).uniform(-2, 2, (4, 5)).astype(np.float32)
    dense = layers.Dense(3, activation="relu")
    y = dense(x)
    k, b = dense.get_weights()
    np.testing.assert_allclose(y, np.maximum(x @ k + b, 0), **TOL)
    np.testing.assert_allclose(layers.Activation("gelu")(x), ACT_REF["gelu"](x.astype(np.float64)), **TOL)


def test_activation_functions_keras_defaults():
    """The Keras 3 defaults that the layer rows rely on."""
    assert inspect.signature(activations.gelu).parameters["approximate"].default is False
    assert inspect.signature(activations.leaky_relu).parameters["negative_slope"].default == 0.2
    assert inspect.signature(layers.LeakyReLU).parameters["negative_slope"].default == 0.3
    assert inspect.signature(activations.elu).parameters["alpha"].default == 1.0
    with pytest.raises(ValueError, match="foo"):
        activations.get("foo")
    assert activations.get(None) is activations.linear


def test_gelu_approximate():
    inp = kgraph.Input(shape=(6,))
    model = kgraph.models.Model(inp, layers.Activation(lambda v: activations.gelu(v, approximate=True))(inp))
    x = np.linspace(-4, 4, 30, dtype=np.float32).reshape(5, 6)
    xd = x.astype(np.float64)
    c = math.sqrt(2 / math.pi)
    ref = 0.5 * xd * (1 + np.tanh(c * (xd + 0.044715 * xd ** 3)))
    np.testing.assert_allclose(model.predict(x, verbose=0), ref, **TOL)


def test_dropout_training_mode_is_not_identity_and_inference_is():
    inp = kgraph.Input(shape=(1000,))
    drop = layers.Dropout(0.5, seed=1)
    model = kgraph.models.Model(inp, drop(inp, training=True))
    x = np.ones((2, 1000), np.float32)
    y = model.predict(x, verbose=0)
    # training=True pinned at call time: a Keras dropout mask, kept units scaled by 1/(1-rate)
    assert set(np.unique(y)) <= {0.0, 2.0}
    assert 0.35 < (y == 0).mean() < 0.65
    model2 = kgraph.models.Model(inp, drop(inp))
    np.testing.assert_array_equal(model2.predict(x, verbose=0), x)


# ---------------------------------------------------------------------------------------
# Initializers
# ---------------------------------------------------------------------------------------
FAN = 256
SHAPE = (FAN, FAN)
TRUNC_STD = 0.87962566103423978  # std of a unit normal truncated to [-2, 2]


def _uniform(limit):
    return ("uniform", limit, limit ** 2 / 3.0)


def _truncated(var):
    # VarianceScaling draws N(0, sqrt(var)/0.8796) truncated at two of its stddevs:
    # the resulting variance is `var`.
    return ("truncated", 2 * math.sqrt(var) / TRUNC_STD, var)


INIT_CASES = {
    "glorot_uniform": _uniform(math.sqrt(6.0 / (FAN + FAN))),
    "glorot_normal": _truncated(2.0 / (FAN + FAN)),
    "he_uniform": _uniform(math.sqrt(6.0 / FAN)),
    "he_normal": _truncated(2.0 / FAN),
    "lecun_uniform": _uniform(math.sqrt(3.0 / FAN)),
    "lecun_normal": _truncated(1.0 / FAN),
    "random_normal": ("normal", None, 0.05 ** 2),      # Keras 3: mean 0, stddev 0.05
    "random_uniform": _uniform(0.05),                   # Keras 3: [-0.05, 0.05]
    "truncated_normal": ("truncated", 0.1, (0.05 * TRUNC_STD) ** 2),  # stddev 0.05, cut at 2 stddev
}


@pytest.mark.parametrize("name", sorted(INIT_CASES))
def test_random_initializer_statistics(name):
    kind, bound, var = INIT_CASES[name]
    kgraph.utils.set_random_seed(123)
    w = initializers.get(name)(SHAPE)
    assert w.shape == SHAPE and w.dtype == np.float32
    assert abs(w.mean()) < 0.05 * math.sqrt(var) * 10  # mean ~ 0 (65536 samples)
    assert abs(w.var() / var - 1.0) < 0.10, f"{name}: variance {w.var():.3g}, expected {var:.3g}"
    if bound is not None:
        assert np.abs(w).max() <= bound * (1 + 1e-6)
        # uses the whole range: the extremes come close to the bound
        assert np.abs(w).max() > 0.95 * bound
    if kind == "normal":
        assert np.abs(w).max() > 3.5 * math.sqrt(var)  # untruncated tails


def test_glorot_uniform_is_dense_default():
    kgraph.utils.set_random_seed(7)
    inp = kgraph.Input(shape=(FAN,))
    dense = layers.Dense(FAN)
    dense(inp)
    assert isinstance(dense.kernel_initializer, initializers.GlorotUniform)
    kernel, bias = dense.get_weights()
    limit = math.sqrt(6.0 / (FAN + FAN))
    assert np.abs(kernel).max() <= limit
    assert abs(kernel.var() / (limit ** 2 / 3) - 1) < 0.10
    np.testing.assert_array_equal(bias, np.zeros(FAN, np.float32))


def test_fans_of_conv_shaped_kernel():
    # receptive field 3*3: fan_in = 3*3*16, fan_out = 3*3*32
    assert initializers.compute_fans((3, 3, 16, 32)) == (144, 288)
    kgraph.utils.set_random_seed(0)
    w = initializers.get("he_uniform")((3, 3, 16, 32))
    assert np.abs(w).max() <= math.sqrt(6.0 / 144)


def test_constant_initializers():
    np.testing.assert_array_equal(initializers.get("zeros")((3, 4)), np.zeros((3, 4), np.float32))
    np.testing.assert_array_equal(initializers.get("ones")((3, 4)), np.ones((3, 4), np.float32))
    np.testing.assert_array_equal(initializers.Constant(0.25)((2, 3)), np.full((2, 3), 0.25, np.float32))
    np.testing.assert_array_equal(initializers.get("constant")((2,)), np.zeros(2, np.float32))
    inp = kgraph.Input(shape=(3,))
    d = layers.Dense(2, kernel_initializer=initializers.Constant(0.5), bias_initializer="ones")
    model = kgraph.models.Model(inp, d(inp))
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_allclose(model.predict(x, verbose=0), x.sum(1, keepdims=True) * 0.5 + 1.0 + np.zeros((2, 2)))


@pytest.mark.parametrize("shape", [(FAN, FAN), (64, 32), (32, 64), (2, 8, 16)])
def test_orthogonal(shape):
    kgraph.utils.set_random_seed(5)
    w = initializers.get("orthogonal")(shape).astype(np.float64)
    assert w.shape == shape
    flat = w.reshape(-1, shape[-1])
    rows, cols = flat.shape
    if rows >= cols:
        np.testing.assert_allclose(flat.T @ flat, np.eye(cols), atol=1e-5)
    else:
        np.testing.assert_allclose(flat @ flat.T, np.eye(rows), atol=1e-5)
    w2 = initializers.Orthogonal(gain=2.0, seed=3)((16, 16)).astype(np.float64)
    np.testing.assert_allclose(w2.T @ w2, 4 * np.eye(16), atol=1e-4)


ALL_INITS = sorted(INIT_CASES) + ["zeros", "ones", "constant", "orthogonal"]


@pytest.mark.parametrize("name", ALL_INITS)
def test_initializer_reproducible_under_set_random_seed(name):
    kgraph.utils.set_random_seed(42)
    a = initializers.get(name)((16, 8))
    b = initializers.get(name)((16, 8))
    kgraph.utils.set_random_seed(42)
    a2 = initializers.get(name)((16, 8))
    b2 = initializers.get(name)((16, 8))
    np.testing.assert_array_equal(a, a2)
    np.testing.assert_array_equal(b, b2)
    if name not in ("zeros", "ones", "constant"):
        assert not np.array_equal(a, b), "two draws after one seed must differ"
        kgraph.utils.set_random_seed(43)
        assert not np.array_equal(initializers.get(name)((16, 8)), a)


def test_initializer_explicit_seed():
    a = initializers.GlorotUniform(seed=9)((8, 8))
    b = initializers.GlorotUniform(seed=9)((8, 8))
    np.testing.assert_array_equal(a, b)


def test_dense_weights_reproducible_under_set_random_seed():
    def weights():
        kgraph.utils.set_random_seed(11)
        inp = kgraph.Input(shape=(5,))
        m = kgraph.models.Model(inp, layers.Dense(2)(layers.Dense(4)(inp)))
        return m.get_weights()
    w1, w2 = weights(), weights()
    assert len(w1) == 4
    for a, b in zip(w1, w2):
        np.testing.assert_array_equal(a, b)
