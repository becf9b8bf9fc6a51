"""Files for serving and for training, checked in fresh processes that import only numpy
and onnxruntime."""
import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx.reference import ReferenceEvaluator

import kgraph
from kgraph import layers
from kgraph.export import compile_inference, export_training
from kgraph.models_zoo import ZOO

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FRESH_PREDICT = r"""
import sys, numpy as np, onnxruntime as ort
sess = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
data = np.load(sys.argv[2])
feeds = {i.name: data[i.name] for i in sess.get_inputs()}
outs = sess.run(None, feeds)
np.savez(sys.argv[3], *outs)
assert "kgraph" not in sys.modules
"""


def zoo_inputs(model, n=5, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for name, t in zip(model.input_names(), model.inputs):
        shape = (n,) + tuple(t.shape[1:])
        out[name] = (rng.integers(0, 5, shape) if t.dtype.kind in "iu" else rng.random(shape)).astype(t.dtype)
    return out


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_model_trains_exports_and_serves_in_a_fresh_process(name, tmp_path):
    entry = ZOO[name]
    kgraph.utils.set_random_seed(0)
    model = entry.build()
    entry.compile(model)
    (x, y), _ = entry.data()
    take = lambda a: [b[:64] for b in a] if isinstance(a, list) else a[:64]  # noqa: E731
    model.fit(take(x), take(y), batch_size=32, epochs=1, verbose=0)
    path = str(tmp_path / f"{name}.onnx")
    model.export(path)
    feeds = zoo_inputs(model)
    np.savez(tmp_path / "in.npz", **feeds)
    subprocess.run([sys.executable, "-c", FRESH_PREDICT, path, str(tmp_path / "in.npz"),
                    str(tmp_path / "out.npz")], check=True)
    got = np.load(tmp_path / "out.npz")
    want = model.predict([feeds[n] for n in model.input_names()], verbose=0)
    want = want if isinstance(want, list) else [want]
    for i, w in enumerate(want):
        np.testing.assert_allclose(got[f"arr_{i}"], w, rtol=1e-5, atol=1e-5)
    proto = onnx.load(path)
    ref = ReferenceEvaluator(proto).run(None, feeds)
    for r, w in zip(ref, want):
        np.testing.assert_allclose(r, w, rtol=1e-4, atol=1e-5)


def test_serving_file_is_standard_onnx_with_keras_names_and_config(tmp_path):
    inp = kgraph.Input(shape=(6,), name="features")
    h = layers.Dropout(0.5)(layers.Dense(4, activation="relu")(inp))
    out = layers.Dense(2, activation="softmax", name="probs")(h)
    model = kgraph.Model(inp, out, name="served")
    path = str(tmp_path / "m.onnx")
    model.export(path)
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    assert [i.name for i in proto.graph.input] == ["features"]
    assert [o.name for o in proto.graph.output] == ["probs"]
    assert {n.op_type for n in proto.graph.node} & {"Dropout", "Identity"} == set()
    assert {n.domain for n in proto.graph.node} == {""}
    meta = {p.key: p.value for p in proto.metadata_props}
    assert proto.producer_name == "kgraph"
    assert json.loads(meta["keras_config"])["config"]["name"] == "served"
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    fixed = compile_inference(model, batch=8)
    assert fixed.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 8
    with pytest.raises(ValueError, match="opset"):
        compile_inference(model, opset=11)


def _small_cnn():
    """A CNN without dropout (random masks would differ between the two runtimes)."""
    model = kgraph.Sequential([kgraph.Input(shape=(8, 8, 1)),
                               layers.Conv2D(4, 3, padding="same", activation="relu"),
                               layers.MaxPooling2D(2),
                               layers.Conv2D(8, 3, activation="relu"),
                               layers.Flatten(),
                               layers.Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def _mlp():
    model = ZOO["mlp"].build()
    ZOO["mlp"].compile(model)
    return model


@pytest.mark.parametrize("build,x_shape", [(_mlp, (64,)), (_small_cnn, (8, 8, 1))], ids=["mlp", "cnn"])
def test_training_export_driven_by_a_numpy_onnxruntime_script(tmp_path, build, x_shape):
    """20 steps by examples/ort_train.py (numpy + onnxruntime only) equal fit(shuffle=False)."""
    def fresh():
        kgraph.utils.set_random_seed(3)
        return build()
    rng = np.random.default_rng(0)
    x = rng.random((640,) + x_shape).astype(np.float32)
    y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 640)]
    exported = fresh()
    manifest = export_training(exported, str(tmp_path / "export"), batch_size=32)
    manifest_initial = dict(np.load(tmp_path / "export" / "state.npz"))
    assert set(manifest["files"]) == {"train_step", "eval", "predict"}
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    result = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "ort_train.py"),
                             str(tmp_path / "export"), str(tmp_path / "x.npy"), str(tmp_path / "y.npy"),
                             "20", str(tmp_path / "state.npz")], check=True, capture_output=True, text=True)
    assert "kgraph imported: False" in result.stdout
    state = np.load(tmp_path / "state.npz")
    reference = fresh()
    reference.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    exported_names = [w["input"] for w in manifest["weights"]]   # same architecture, same order
    assert len(exported_names) == len(reference.weights)
    for name, w in zip(exported_names, reference.weights):
        np.testing.assert_allclose(state[name], w.numpy(), rtol=1e-5, atol=1e-5)
        assert not np.allclose(state[name], manifest_initial[name])  # it did train
