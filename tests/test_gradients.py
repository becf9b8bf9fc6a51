"""Every differentiable op in the registry against central finite differences (float64).

The table below must cover every op the registry marks differentiable: the test
`test_table_covers_registry` fails when an op is added without a gradient check.
Each case builds loss = sum(f(x...) * R) for a fixed random R, derives the gradients
with kgraph's autodiff pass, lowers to ONNX and evaluates with onnx.reference (an
independent implementation of the ONNX spec), then compares against
(loss(x + h) - loss(x - h)) / 2h per element.
"""
import numpy as np
import pytest
from onnx.reference import ReferenceEvaluator

import kgraph.ir as ir
from kgraph.ir import ops
from kgraph.lower import lower
from kgraph.passes.autodiff import gradients

rng = np.random.default_rng(0)


def r(*shape, lo=-1.0, hi=1.0):
    return rng.uniform(lo, hi, shape)


def away_from_zero(*shape):
    x = r(*shape)
    return np.where(np.abs(x) < 0.2, 0.5, x)


def fused_conv_tanh(x, w, b):
    """The op the conv+activation fusion pass creates (no layer emits it directly)."""
    attrs = {"strides": (2, 1), "dilations": (1, 1), "pads": (1, 0, 0, 1), "groups": 1, "activation": "tanh"}
    return x.graph.add_node("conv_act", [x, w, b], attrs)[0]


# op name -> (function of Values, list of float64 inputs, indices of differentiable inputs)
CASES = {
    "add": (lambda a, b: a + b, [r(3, 4), r(4)], None),
    "sub": (lambda a, b: a - b, [r(3, 1), r(3, 4)], None),
    "mul": (lambda a, b: a * b, [r(2, 3, 4), r(1, 4)], None),
    "div": (lambda a, b: a / b, [r(3, 4), r(3, 4, lo=0.5, hi=2.0)], None),
    "pow": (lambda a, b: ops.pow(a, b), [r(3, 4, lo=0.5, hi=2.0), r(3, 4)], None),
    "maximum": (ops.maximum, [away_from_zero(3, 4), np.zeros((3, 4)) + 0.05], None),
    "minimum": (ops.minimum, [away_from_zero(3, 4), np.zeros((3, 4)) + 0.05], None),
    "where": (lambda c, a, b: ops.where(ops.greater(c, 0.0), a, b), [away_from_zero(3, 4), r(3, 4), r(4)], [1, 2]),
    "neg": (ops.neg, [r(3, 4)], None),
    "exp": (ops.exp, [r(3, 4)], None),
    "log": (ops.log, [r(3, 4, lo=0.5, hi=2.0)], None),
    "sqrt": (ops.sqrt, [r(3, 4, lo=0.5, hi=2.0)], None),
    "abs": (ops.abs, [away_from_zero(3, 4)], None),
    "tanh": (ops.tanh, [r(3, 4)], None),
    "sigmoid": (ops.sigmoid, [r(3, 4)], None),
    "relu": (ops.relu, [away_from_zero(3, 4)], None),
    "softplus": (ops.softplus, [r(3, 4)], None),
    # onnx.reference evaluates Erf in float32 (np.vectorize(math.erf, otypes="f")): larger step
    "erf": (ops.erf, [r(3, 4)], None, 1e-3, 1e-3),
    "elu": (lambda x: ops.elu(x, 0.7), [away_from_zero(3, 4)], None),
    "selu": (ops.selu, [away_from_zero(3, 4)], None),
    "leaky_relu": (lambda x: ops.leaky_relu(x, 0.3), [away_from_zero(3, 4)], None),
    "softmax": (lambda x: ops.softmax(x, -1), [r(3, 5)], None),
    "log_softmax": (lambda x: ops.log_softmax(x, 1), [r(3, 5, 2)], None),
    "matmul": (ops.matmul, [r(2, 3, 4), r(4, 5)], None),
    "reduce_sum": (lambda x: ops.reduce_sum(x, axes=(0, 2)), [r(2, 3, 4)], None),
    "reduce_mean": (lambda x: ops.reduce_mean(x, axes=1, keepdims=True), [r(2, 3, 4)], None),
    "reduce_max": (lambda x: ops.reduce_max(x, axes=-1), [r(3, 4)], None),
    "pair_max": (ops.pair_max, [r(3, 2, 4)], None),
    "reduce_min": (lambda x: ops.reduce_min(x, axes=0), [r(3, 4)], None),
    "reshape": (lambda x: ops.reshape(x, (0, -1)), [r(2, 3, 4)], None),
    "reshape_like": (lambda x, y: ops.reshape_like(x, y), [r(2, 12), r(2, 3, 4)], [0]),
    "transpose": (lambda x: ops.transpose(x, (2, 0, 1)), [r(2, 3, 4)], None),
    "concat": (lambda a, b: ops.concat([a, b], axis=1), [r(2, 3), r(2, 5)], None),
    "slice": (lambda x: ops.slice_(x, axes=(1,), starts=(1,), ends=(4,)), [r(2, 5)], None),
    "pad": (lambda x: ops.pad(x, (0, 1), (1, 2)), [r(2, 3)], None),
    # the middle piece is unused: its gradient is the zero fill of the concat
    "split": (lambda x: (lambda a, b, c: ops.concat([c, a], axis=1))(*ops.split(x, (1, 3, 2), axis=1)),
              [r(2, 6)], None),
    "expand": (lambda x: ops.expand(x, (3, 1, 4)), [r(2, 1)], None),
    "expand_like": (lambda x, y: ops.expand_like(x, y), [r(1, 4), r(3, 4)], [0]),
    "unsqueeze": (lambda x: ops.unsqueeze(x, 1), [r(2, 3)], None),
    "squeeze": (lambda x: ops.squeeze(x, 1), [r(2, 1, 3)], None),
    "gather": (lambda p, i: ops.gather(p, ops.cast(i, np.int64)), [r(5, 3), np.array([[0, 2], [4, 2]], float)], [0]),
    "scatter_add": (lambda b, i, u: ops.scatter_add(b, ops.cast(i, np.int64), u),
                    [r(5, 3), np.array([1, 3, 1], float), r(3, 3)], [0, 2]),
    "identity": (ops.identity, [r(3, 4)], None),
    # through float32 and back: a linear function, so a large step is exact up to float32 rounding
    "cast": (lambda x: ops.cast(ops.cast(x, np.float32), np.float64), [r(3, 4)], None, 1e-2, 1e-5),
    "clip": (lambda x: ops.clip(x, -0.5, 0.5), [np.array([[-0.9, -0.3, 0.1, 0.4, 0.8]])], None),
    # unnormalised probabilities (the renormalisation's gradient); eps 0.05 clips the first
    # column (q ~ 0.004 to 0.012), so the clip's mask is checked too; in the fused op the
    # -3.0 and -0.4 logits give q < 0.05
    # batch-innermost (c, h, w, n) images, a 2x3 kernel; col2im is im2col's adjoint
    "im2col": (lambda x: ops.im2col(x, 2, 3), [r(2, 4, 5, 3)], None),
    "col2im": (lambda p, like: ops.col2im(p, like, 2, 3), [r(12, 27), r(2, 4, 5, 3)], [0]),
    "crossentropy": (lambda y, p: ops.crossentropy(y, p, -1, 0.05),
                     [r(3, 5, lo=0.0, hi=1.0), np.array([[0.01, 0.5, 0.9, 0.3, 0.6], [0.02, 0.2, 0.4, 0.7, 0.1],
                                                         [0.01, 0.3, 0.2, 0.3, 0.05]]) * 1.3],
                     None),
    "softmax_crossentropy": (lambda y, z: ops.softmax_crossentropy(y, z, ops.softmax(z, -1), 1, 0.05),
                             [r(3, 5, lo=0.0, hi=1.0), np.array([[-3.0, 0.5, 0.9, 0.3, 0.6], [4.0, 0.2, -0.4, 0.7, 0.1],
                                                                 [0.1, -0.3, 0.2, 0.3, -0.5]])], None),
    "dense": (lambda x, w, b: ops.dense(x, w, b, "tanh"), [r(2, 3, 4), r(4, 5), r(5)], None),
    "dense/relu": (lambda x, w, b: ops.dense(x, w, b, "relu"), [r(3, 4), r(4, 5), away_from_zero(5) * 3], None),
    "dense/sigmoid": (lambda x, w, b: ops.dense(x, w, b, "sigmoid"), [r(3, 4), r(4, 5), r(5)], None),
    # convolution and pooling (channels-first); pads = begins + ends, 'same' = SAME_UPPER
    "conv": (lambda x, w, b: ops.conv(x, w, b), [r(1, 2, 5, 4), r(3, 2, 3, 2), r(3)], None),
    "conv[s2,same,odd]": (lambda x, w: ops.conv(x, w, strides=2, pads=(1, 1, 1, 1)),
                          [r(2, 2, 5, 5), r(2, 2, 3, 3)], None),
    "conv[s2,same,even]": (lambda x, w: ops.conv(x, w, strides=2, pads=(0, 0, 1, 1)),
                           [r(1, 2, 6, 4), r(2, 2, 3, 3)], None),
    "conv[dilation,groups]": (lambda x, w: ops.conv(x, w, dilations=2, pads=(1, 0, 1, 1), groups=2),
                              [r(1, 4, 5, 4), r(4, 2, 2, 2)], None),
    "conv[depthwise,s2,mult2]": (lambda x, w: ops.conv(x, w, strides=2, pads=(0, 1, 1, 1), groups=2),
                                 [r(1, 2, 5, 4), r(4, 1, 3, 3)], None),
    "conv[1d,s2]": (lambda x, w: ops.conv(x, w, strides=2, pads=(1, 0)), [r(2, 3, 7), r(2, 3, 3)], None),
    "conv_transpose": (lambda x, w, b: ops.conv_transpose(x, w, b), [r(1, 2, 3, 3), r(2, 3, 3, 2), r(3)],
                       None),
    "conv_transpose[s2,same]": (lambda x, w: ops.conv_transpose(x, w, strides=2, pads=(0, 1, 1, 1)),
                                [r(1, 2, 3, 2), r(2, 2, 3, 4)], None),
    "conv_transpose[s2,valid,output_padding]": (
        lambda x, w: ops.conv_transpose(x, w, strides=2, output_padding=(1, 0)),
        [r(2, 2, 2, 3), r(2, 2, 3, 3)], None),
    "conv_transpose[groups]": (lambda x, w: ops.conv_transpose(x, w, strides=(1, 2), groups=2),
                               [r(1, 4, 3, 2), r(4, 2, 2, 2)], None),
    "max_pool": (lambda x: ops.max_pool(x, 2), [r(2, 2, 5, 4)], None),
    "max_pool[s2,same,odd]": (lambda x: ops.max_pool(x, 2, pads=(0, 0, 1, 1)), [r(1, 3, 5, 7)], None),
    "max_pool[3s2,same,even]": (lambda x: ops.max_pool(x, 3, 2, pads=(0, 0, 1, 1)), [r(1, 2, 6, 6)], None),
    "max_pool[3s1,same]": (lambda x: ops.max_pool(x, 3, 1, pads=(1, 1, 1, 1)), [r(1, 2, 5, 4)], None),
    "max_pool[1d,3s2]": (lambda x: ops.max_pool(x, 3, 2), [r(2, 2, 8)], None),
    "avg_pool": (lambda x: ops.avg_pool(x, 2), [r(2, 2, 5, 4)], None),
    "avg_pool[s2,same,odd]": (lambda x: ops.avg_pool(x, 2, pads=(0, 0, 1, 1)), [r(1, 2, 5, 7)], None),
    "avg_pool[3s1,same]": (lambda x: ops.avg_pool(x, 3, 1, pads=(1, 1, 1, 1)), [r(1, 2, 5, 4)], None),
    "avg_pool[1d,3s2,same]": (lambda x: ops.avg_pool(x, 3, 2, pads=(0, 1)), [r(2, 2, 8)], None),
    "conv_act": (lambda x, w, b: fused_conv_tanh(x, w, b), [r(2, 3, 5, 4), r(4, 3, 3, 2), r(4)], None),
    "lstm_sequence": (lambda x, k: ops.concat(list(ops.lstm_sequence(x, k, steps=3, bias=True)), axis=1),
                      [r(2, 6), r(5, 8)], None),
    "lstm_sequence[init,reverse,sequences,no bias]": (
        lambda x, k, h, c: ops.concat(list(ops.lstm_sequence(x, k, h, c, steps=3, bias=False, reverse=True,
                                                             sequences=True)), axis=1),
        [r(2, 6), r(4, 8), r(2, 2), r(2, 2)], None),
    "lstm_sequence[1 step,sequences]": (
        lambda x, k: ops.concat(list(ops.lstm_sequence(x, k, steps=1, bias=True, sequences=True)), axis=1),
        [r(2, 2), r(5, 8)], None),
    "dropout": (None, None, None),  # random: checked against its mask in test_dropout_gradient
}


def build_and_eval(fn, arrays, diff):
    g = ir.Graph("grad_check")
    xs = [g.add_input(f"x{i}", a.shape, np.float64) for i, a in enumerate(arrays)]
    with ops.building(g):
        y = fn(*xs)
        weight = g.const(rng.uniform(0.5, 1.5, y.shape))
        loss = ops.reduce_sum(y * weight)
        grads = gradients(g, loss, [xs[i] for i in diff])
    g.set_outputs([("loss", loss)] + [(f"g{i}", gv) for i, gv in zip(diff, grads)])
    ir.verify(g)
    sess = ReferenceEvaluator(lower(g))
    return lambda vals: sess.run(None, {f"x{i}": v for i, v in enumerate(vals)})


def test_table_covers_registry():
    differentiable = {name for name, op in ir.all_ops().items() if not op.nondiff}
    assert differentiable - set(CASES) == set(), "ops without a gradient check"
    for name in differentiable:
        assert ir.get_op(name).grad is not None, f"op '{name}' has no gradient rule"


@pytest.mark.parametrize("name", sorted(k for k, v in CASES.items() if v[0] is not None))
def test_gradient_matches_finite_differences(name):
    fn, arrays, diff, h, rtol = (CASES[name] + (1e-6, 1e-5))[:5]
    diff = list(range(len(arrays))) if diff is None else diff
    run = build_and_eval(fn, arrays, diff)
    outs = run(arrays)
    for k, i in enumerate(diff):
        analytic = outs[1 + k]
        numeric = np.zeros_like(arrays[i])
        for idx in np.ndindex(arrays[i].shape):
            plus = [a.copy() for a in arrays]
            minus = [a.copy() for a in arrays]
            plus[i][idx] += h
            minus[i][idx] -= h
            numeric[idx] = (run(plus)[0] - run(minus)[0]) / (2 * h)
        np.testing.assert_allclose(analytic, numeric, rtol=rtol, atol=1e-6,
                                   err_msg=f"{name}: gradient of input {i}")


def test_missing_rule_names_the_op():
    from kgraph.ir.registry import get_op
    from kgraph.passes.autodiff import GradientError
    op = get_op("tanh")
    saved, op.grad = op.grad, None
    try:
        g = ir.Graph()
        x = g.add_input("x", (2,), np.float32)
        with ops.building(g):
            loss = ops.reduce_sum(ops.tanh(x))
            with pytest.raises(GradientError, match="'tanh'"):
                gradients(g, loss, [x])
    finally:
        op.grad = saved


def test_no_gradient_into_integers_and_accumulation():
    # y = x*x + x uses x three times: gradient 2x + 1 accumulated from the consumers
    g = ir.Graph()
    x = g.add_input("x", (3,), np.float64)
    with ops.building(g):
        loss = ops.reduce_sum(x * x + x)
        (gx,) = gradients(g, loss, [x])
    g.set_outputs([("g", gx)])
    out = ReferenceEvaluator(lower(g)).run(None, {"x": np.array([1.0, -2.0, 3.0])})[0]
    np.testing.assert_allclose(out, [3.0, -3.0, 7.0])
