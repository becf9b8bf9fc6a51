"""The command line: happy paths and user mistakes (one line, non-zero exit, nothing written)."""
import os

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from kgraph.cli import main


@pytest.fixture
def cli(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return CliRunner()


def test_compile_zoo_with_check_dump_and_graph(cli, tmp_path):
    result = cli.invoke(main, ["compile", "mlp", "-o", "mlp.onnx", "--check", "--dump-ir", "ir",
                               "--graph", "g.dot"])
    assert result.exit_code == 0, result.output
    assert "Total params" in result.output
    assert "fuse_dense_activation" in result.output and "->" in result.output
    assert "onnx.checker ok" in result.output
    proto = onnx.load(tmp_path / "mlp.onnx")
    assert [n.op_type for n in proto.graph.node].count("Gemm") == 3
    assert (tmp_path / "g.dot").read_text().startswith("digraph")
    assert any(p.name.endswith(".dot") for p in (tmp_path / "ir").iterdir())


def test_compile_options_opset_batch_target_no_fuse(cli, tmp_path):
    assert cli.invoke(main, ["compile", "mlp", "-o", "a.onnx", "--opset", "20", "--batch", "4"]).exit_code == 0
    proto = onnx.load(tmp_path / "a.onnx")
    assert proto.opset_import[0].version == 20
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 4
    assert cli.invoke(main, ["compile", "mlp", "-o", "b.onnx", "--target", "onnxruntime"]).exit_code == 0
    assert "FusedGemm" in {n.op_type for n in onnx.load(tmp_path / "b.onnx").graph.node}
    assert cli.invoke(main, ["compile", "mlp", "-o", "c.onnx", "--no-fuse"]).exit_code == 0
    assert "MatMul" in {n.op_type for n in onnx.load(tmp_path / "c.onnx").graph.node}


def test_compile_python_file_and_module_function(cli, tmp_path):
    (tmp_path / "net.py").write_text(
        "import kgraph\nfrom kgraph import layers\n"
        "def build():\n    return kgraph.Sequential([kgraph.Input(shape=(3,)), layers.Dense(2)])\n")
    assert cli.invoke(main, ["compile", "net.py", "-o", "net.onnx"]).exit_code == 0
    assert (tmp_path / "net.onnx").exists()
    result = cli.invoke(main, ["compile", "kgraph.models_zoo.mlp:build", "-o", "z.onnx"])
    assert result.exit_code == 0, result.output


def test_training_export_and_run_and_inspect(cli, tmp_path):
    assert cli.invoke(main, ["compile", "mlp", "--training", "-o", "tr"]).exit_code == 0
    assert {p.name for p in (tmp_path / "tr").iterdir()} >= {"train_step.onnx", "eval.onnx", "predict.onnx",
                                                              "state.npz", "manifest.json"}
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((3, 64)).astype(np.float32))
    result = cli.invoke(main, ["run", "tr/predict.onnx", "--input", "x.npy", "-o", "y.npy"])
    assert result.exit_code == 0, result.output
    y = np.load(tmp_path / "y.npy")
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)
    result = cli.invoke(main, ["inspect", "tr/predict.onnx"])
    assert result.exit_code == 0 and "parameters" in result.output and "Gemm 3" in result.output


@pytest.mark.parametrize("args,message", [
    (["compile", "missing.py"], "no such file: missing.py"),
    (["compile", "nosuchzoo"], "cannot interpret model source 'nosuchzoo'"),
    (["compile", "empty.py"], "defines neither build() nor a module-level `model`"),
    (["compile", "broken.py"], "broken.py failed to run: ZeroDivisionError"),
    (["compile", "mlp", "--opset", "7"], "--opset must be between 18 and 21"),
    (["compile", "mlp", "--passes", "nope"], "unknown pass(es) ['nope']"),
    (["train", "nosuchzoo"], "unknown zoo model 'nosuchzoo'"),
    (["run", "missing.onnx", "--input", "x.npy"], "no such file: missing.onnx"),
    (["inspect", "notes.txt"], "cannot inspect notes.txt"),
    (["compile", "missing.h5"], "no such file: missing.h5"),
])
def test_user_mistakes_are_one_line_and_write_nothing(cli, tmp_path, args, message):
    (tmp_path / "empty.py").write_text("x = 1\n")
    (tmp_path / "broken.py").write_text("1 / 0\n")
    (tmp_path / "notes.txt").write_text("hello\n")
    before = set(os.listdir(tmp_path))
    result = cli.invoke(main, args)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output
    assert set(os.listdir(tmp_path)) == before


def test_zoo_list(cli):
    result = cli.invoke(main, ["zoo", "list"])
    assert result.exit_code == 0 and "mlp" in result.output


FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "keras")


@pytest.mark.parametrize("name", ["mlp", "cnn", "lstm", "two_inputs", "batchnorm"])
def test_compile_a_real_keras_h5_matches_keras_predict(cli, tmp_path, name):
    """`kgraph compile model.h5` on files written by real Keras 3: the ONNX file's outputs
    equal the predictions Keras saved beside them."""
    import onnxruntime as ort
    result = cli.invoke(main, ["compile", os.path.join(FIXTURES, f"{name}.h5"), "-o", "k.onnx", "--check"])
    assert result.exit_code == 0, result.output
    data = np.load(os.path.join(FIXTURES, f"{name}.npz"))
    sess = ort.InferenceSession(str(tmp_path / "k.onnx"), providers=["CPUExecutionProvider"])
    feeds = {i.name: data[f"x{k}"].astype(np.float32) for k, i in enumerate(sess.get_inputs())}
    np.testing.assert_allclose(sess.run(None, feeds)[0], data["pred"], rtol=1e-5, atol=1e-5)


def test_compile_h5_with_an_unsupported_layer_is_one_line_and_writes_nothing(cli, tmp_path):
    import shutil

    import h5py
    bad = tmp_path / "bad.h5"
    shutil.copy(os.path.join(FIXTURES, "mlp.h5"), bad)
    with h5py.File(bad, "r+") as f:
        config = f.attrs["model_config"]
        config = config.decode() if isinstance(config, bytes) else config
        f.attrs["model_config"] = config.replace('"class_name": "Dense"', '"class_name": "Frobnicate"', 1)
    before = set(os.listdir(tmp_path))
    result = cli.invoke(main, ["compile", "bad.h5", "-o", "bad.onnx"])
    assert result.exit_code != 0
    assert "Frobnicate" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert set(os.listdir(tmp_path)) == before
