"""The `kgraph` command line: compile models to ONNX, train zoo models on bundled data."""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys

import click


class UserError(click.ClickException):
    """A mistake in the command's input: one line on stderr, exit code 1, no traceback."""


def load_model_source(src: str):
    """A model from `module:function`, a `.py` file defining `build()` or `model`, or a zoo name."""
    if src.endswith(".py"):
        if not os.path.exists(src):
            raise UserError(f"no such file: {src}")
        spec = importlib.util.spec_from_file_location("_kgraph_user_model", src)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as e:  # the user's file failed: say where, in one line
            raise UserError(f"{src} failed to run: {type(e).__name__}: {e}") from None
        if hasattr(module, "build"):
            return module.build()
        if hasattr(module, "model"):
            return module.model
        raise UserError(f"{src} defines neither build() nor a module-level `model`")
    if ":" in src:
        mod_name, fn_name = src.split(":", 1)
        try:
            module = importlib.import_module(mod_name)
        except ImportError as e:
            raise UserError(f"cannot import module '{mod_name}': {e}") from None
        fn = getattr(module, fn_name, None)
        if fn is None:
            raise UserError(f"module '{mod_name}' has no attribute '{fn_name}'")
        return fn() if callable(fn) else fn
    from kgraph import models_zoo
    if src in models_zoo.ZOO:
        return models_zoo.ZOO[src].build()
    raise UserError(f"cannot interpret model source '{src}': expected a zoo name "
                    f"({', '.join(sorted(models_zoo.ZOO))}), module:function, or a .py file")


@click.group()
@click.version_option(package_name="kgraph")
def main():
    """kgraph: Keras models compiled to ONNX, run and trained by onnxruntime."""


@main.command("compile")
@click.argument("src")
@click.option("-o", "--out", default=None, help="Output .onnx path (default: <model name>.onnx).")
@click.option("--dump-ir", "dump_ir", default=None, type=click.Path(file_okay=False),
              help="Write the IR after each pass into this folder.")
@click.option("--check/--no-check", default=True, show_default=True,
              help="Run onnx.checker and compare onnxruntime with kgraph's predict.")
def compile_cmd(src, out, dump_ir, check):
    """Compile SRC (zoo name, module:function, or .py file) to an ONNX file for serving."""
    import numpy as np

    from kgraph.lower.onnx_lower import check as onnx_check
    from kgraph.runtime.inference import compile_inference
    from kgraph.saving_atomic import atomic_write_bytes

    if dump_ir:
        os.environ["KGRAPH_DUMP_IR"] = dump_ir
    model = load_model_source(src)
    model.summary()
    proto = compile_inference(model)
    out = out or f"{model.name}.onnx"
    if check:
        onnx_check(proto)
        import onnxruntime as ort
        sess = ort.InferenceSession(proto.SerializeToString())
        rng = np.random.default_rng(0)
        feeds = {n: rng.random((2,) + t.shape[1:]).astype(t.dtype) for n, t in zip(model.input_names(), model.inputs)}
        got = sess.run(None, feeds)
        want = model.predict_on_batch([feeds[n] for n in model.input_names()])
        want = want if isinstance(want, list) else [want]
        err = max(float(np.max(np.abs(a - b))) for a, b in zip(got, want))
        click.echo(f"check: onnx.checker ok; onnxruntime vs kgraph max abs diff {err:.2e}")
    atomic_write_bytes(out, proto.SerializeToString())
    click.echo(f"wrote {out} ({os.path.getsize(out):,} bytes, opset {proto.opset_import[0].version})")


@main.command("train")
@click.argument("name")
@click.option("--epochs", default=None, type=int, help="Epochs (default: the zoo entry's).")
@click.option("--batch-size", default=32, show_default=True, type=int)
@click.option("-o", "--out", default=None, help="Write the trained model's ONNX inference graph here.")
@click.option("--verbose", default=1, show_default=True, type=click.IntRange(0, 2))
def train_cmd(name, epochs, batch_size, out, verbose):
    """Train zoo model NAME on its bundled data set and print the test accuracy."""
    from kgraph import models_zoo
    from kgraph.runtime.inference import compile_inference
    from kgraph.saving_atomic import atomic_write_bytes

    if name not in models_zoo.ZOO:
        raise UserError(f"unknown zoo model '{name}'; available: {', '.join(sorted(models_zoo.ZOO))}")
    entry = models_zoo.ZOO[name]
    (x_train, y_train), (x_test, y_test) = entry.data()
    model = entry.build()
    entry.compile(model)
    model.summary()
    model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs or entry.epochs,
              validation_split=0.1, verbose=verbose)
    logs = model.evaluate(x_test, y_test, verbose=0, return_dict=True)
    click.echo("test " + " - ".join(f"{k}: {v:.4f}" for k, v in logs.items()))
    if out:
        atomic_write_bytes(out, compile_inference(model).SerializeToString())
        click.echo(f"wrote {out}")


@main.group("zoo")
def zoo_group():
    """The bundled model zoo."""


@zoo_group.command("list")
def zoo_list():
    """List the zoo's models."""
    from kgraph import models_zoo
    for name, entry in sorted(models_zoo.ZOO.items()):
        click.echo(f"{name:12s} {entry.description}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
