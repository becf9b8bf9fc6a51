"""conv_training_lowering: im2col convs and reshape max-pools in training graphs.
Positive (the rewrite happened), negative (near misses left alone, with the reason),
numeric (outputs and one SGD step unchanged)."""
import numpy as np
import onnxruntime as ort
import pytest

import kgraph
import kgraph.ir as ir
from kgraph import layers
from kgraph.ir import ops
from kgraph.lower import lower
from kgraph.passes import conv_training_lowering as ctl

rng = np.random.default_rng(0)


@pytest.fixture
def lowering_on():
    before = ctl.conv_training_lowering_enabled()
    ctl.set_conv_training_lowering(True)
    yield
    ctl.set_conv_training_lowering(before)


def run(graph, feeds):
    sess = ort.InferenceSession(lower(graph).SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def conv_pool_graph(pads, size=9, act=True):
    g = ir.Graph("cp")
    x = g.add_input("x", (None, 3, size, size), np.float32)
    w = g.add_input("w", (5, 3, 3, 3), np.float32)
    b = g.add_input("b", (5,), np.float32)
    with ops.building(g):
        y = ops.conv(x, w, b, pads=pads)
        if act:
            y = ops.relu(y)
        y = ops.max_pool(y, 2)
    g.set_outputs([("y", y)])
    return g


@pytest.mark.parametrize("pads,size", [(0, 9), (1, 8), ((0, 1, 2, 1), 7)])
def test_rewrite_happens_and_outputs_match(lowering_on, pads, size):
    g = conv_pool_graph(pads, size)
    feeds = {"x": rng.normal(size=(4, 3, size, size)).astype(np.float32),
             "w": rng.normal(size=(5, 3, 3, 3)).astype(np.float32),
             "b": rng.normal(size=(5,)).astype(np.float32)}
    y0 = run(g, feeds)[0]
    assert ctl.conv_training_lowering(g) is True
    counts = g.op_counts()
    assert "conv" not in counts and "max_pool" not in counts, counts
    assert counts["matmul"] == 1 and counts["pair_max"] == 2, counts
    np.testing.assert_allclose(run(g, feeds)[0], y0, rtol=1e-5, atol=1e-5)


def test_near_misses_are_left_alone(lowering_on):
    g = ir.Graph("miss")
    x = g.add_input("x", (None, 4, 8, 8), np.float32)
    with ops.building(g):
        strided = ops.conv(x, g.const(rng.normal(size=(2, 4, 3, 3)).astype(np.float32)), strides=2)
        grouped = ops.conv(x, g.const(rng.normal(size=(4, 2, 3, 3)).astype(np.float32)), groups=2)
        pooled = ops.max_pool(x, 3)
        padded = ops.max_pool(x, 2, pads=(1, 1, 1, 1))
    g.set_outputs([("a", strided), ("b", grouped), ("c", pooled), ("d", padded)])
    reasons = {g.g.nodes[n]["op"] + str(i): (ctl.match_conv if g.g.nodes[n]["op"] == "conv" else ctl.match_pool)(g, n)
               for i, n in enumerate(g.topological_order()) if g.g.nodes[n]["op"] in ("conv", "max_pool")}
    assert sum("/ dilations" in r for r in reasons.values()) == 1
    assert sum("groups=2" in r for r in reasons.values()) == 1
    assert sum("not 2x2/2 unpadded" in r for r in reasons.values()) == 2
    assert ctl.conv_training_lowering(g) is False
    assert g.op_counts()["conv"] == 2 and g.op_counts()["max_pool"] == 2


def test_disabled_pass_changes_nothing():
    ctl.set_conv_training_lowering(False)
    g = conv_pool_graph(0)
    assert ctl.conv_training_lowering(g) is False
    assert g.op_counts()["conv"] == 1


def cnn():
    kgraph.utils.set_random_seed(3)
    x = inp = kgraph.Input(shape=(11, 11, 2))
    x = layers.Conv2D(4, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D(2)(x)                      # 11 -> 5: odd last row dropped
    x = layers.Conv2D(6, 3, activation="tanh")(x)
    x = layers.MaxPooling2D(2)(x)                      # 3 -> 1
    x = layers.Conv2D(3, 2, strides=1, padding="same", use_bias=False)(x)
    x = layers.Flatten()(x)
    out = layers.Dense(3, activation="softmax")(x)
    return kgraph.Model(inp, out)


def test_one_sgd_step_matches_onnx_conv():
    """The whole train step (autodiff of the rewritten graph) against ONNX Conv/MaxPool."""
    x = rng.normal(size=(6, 11, 11, 2)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 6)]
    results = []
    before = ctl.conv_training_lowering_enabled()
    try:
        for enabled in (True, False):
            ctl.set_conv_training_lowering(enabled)
            model = cnn()
            model.compile(optimizer=kgraph.optimizers.SGD(0.5), loss="categorical_crossentropy")
            model.train_on_batch(x, y)
            counts = next(iter(model._runners.values())).ir.op_counts()
            assert ("conv" in counts or "conv_act" in counts) != enabled, counts
            assert ("max_pool" in counts) != enabled, counts
            results.append(model.get_weights())
            if enabled:   # serving graphs keep ONNX Conv and MaxPool
                from kgraph.runtime.inference import compile_inference
                onnx_ops = {n.op_type for n in compile_inference(model).graph.node}
                assert {"Conv", "MaxPool"} <= onnx_ops, onnx_ops
    finally:
        ctl.set_conv_training_lowering(before)
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_im2col_and_col2im_against_numpy():
    """im2col's rows are (channel, i, j) and its columns (y, z, batch); col2im adds every
    patch entry back to its pixel (the adjoint: <im2col(x), p> == <x, col2im(p)>)."""
    import kgraph.ir as ir
    from kgraph.ir import ops
    from kgraph.lower import lower
    import onnxruntime as ort
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 6, 5, 4)).astype(np.float32)
    p = rng.normal(size=(3 * 3 * 2, 4 * 4 * 4)).astype(np.float32)
    g = ir.Graph("patches")
    xv = g.add_input("x", (3, 6, 5, None), np.float32)
    pv = g.add_input("p", (18, None), np.float32)
    with ops.building(g):
        g.set_outputs([("cols", ops.im2col(xv, 3, 2)), ("img", ops.col2im(pv, xv, 3, 2))])
    sess = ort.InferenceSession(lower(g).SerializeToString(), providers=["CPUExecutionProvider"])
    cols, img = sess.run(None, {"x": x, "p": p})
    ref = np.stack([x[:, i:i + 4, j:j + 4, :] for i in range(3) for j in range(2)], axis=1)
    np.testing.assert_array_equal(cols, ref.reshape(18, -1))
    back = np.zeros_like(x)
    pr = p.reshape(3, 3, 2, 4, 4, 4)
    for i in range(3):
        for j in range(2):
            back[:, i:i + 4, j:j + 4, :] += pr[:, i, j]
    np.testing.assert_allclose(img, back, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.vdot(cols, p), np.vdot(x, img), rtol=1e-5)


@pytest.mark.parametrize("act", [True, False])
def test_conv_bias_moves_after_the_pool(lowering_on, act):
    """pool(relu(conv + b)) -> relu(pool(conv) + b): the per-channel bias is added to the
    pooled quarter of the image (exact: adding a constant keeps the order in a window)."""
    from kgraph.passes.cleanup import dead_code_elimination
    g = conv_pool_graph(0, 9, act=act)
    feeds = {"x": rng.normal(size=(4, 3, 9, 9)).astype(np.float32),
             "w": rng.normal(size=(5, 3, 3, 3)).astype(np.float32),
             "b": rng.normal(size=(5,)).astype(np.float32)}
    y0 = run(g, feeds)[0]
    ctl.conv_training_lowering(g)
    dead_code_elimination(g)
    adds = [g.node_outputs(n)[0].shape for n in g.g.nodes if g.g.nodes[n]["op"] == "add"]
    assert adds == [(5, 3, 3, None)], adds          # pooled (c, h/2, w/2, n), not (5, 7, 7, n)
    np.testing.assert_array_equal(run(g, feeds)[0], y0)
