"""The `kgraph` command line: compile models to ONNX for serving or training, run and
inspect files, train zoo models on bundled data. User mistakes print one line and exit
non-zero; nothing is written then."""
from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import subprocess
import sys

import click


class UserError(click.ClickException):
    """A mistake in the command's input: one line on stderr, exit code 1, no traceback."""


def load_model_source(src: str):
    """A model from a zoo name, `module:function`, a `.py` file defining `build()` or
    `model`, or a Keras `.h5` / `.keras` file."""
    if src.endswith((".h5", ".hdf5", ".keras")):
        if not os.path.exists(src):
            raise UserError(f"no such file: {src}")
        from kgraph.models import load_model
        try:
            return load_model(src, compile=False)
        except (ValueError, OSError, KeyError, TypeError) as e:
            raise UserError(f"cannot load {src}: {e}") from None
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
                    f"({', '.join(sorted(models_zoo.ZOO))}), module:function, a .py file, or a "
                    f"Keras .h5/.keras file")


def _check_against_predict(model, proto):
    """onnx.checker, then onnxruntime and onnx.reference against kgraph's predict."""
    import numpy as np
    import onnxruntime as ort
    from onnx.reference import ReferenceEvaluator

    from kgraph.lower.onnx_lower import check as onnx_check
    onnx_check(proto)
    rng = np.random.default_rng(0)
    feeds = {}
    for n, t in zip(model.input_names(), model.inputs):
        shape = (2,) + tuple(d or 3 for d in t.shape[1:])
        feeds[n] = (rng.integers(0, 3, shape) if t.dtype.kind in "iu" else rng.random(shape)).astype(t.dtype)
    want = model.predict_on_batch([feeds[n] for n in model.input_names()])
    want = want if isinstance(want, list) else list(want.values()) if isinstance(want, dict) else [want]
    errs = {}
    if not any(n.domain for n in proto.graph.node):
        errs["onnx.reference"] = ReferenceEvaluator(proto).run(None, feeds)
    errs["onnxruntime"] = ort.InferenceSession(proto.SerializeToString(),
                                               providers=["CPUExecutionProvider"]).run(None, feeds)
    return {k: max(float(np.max(np.abs(np.asarray(a) - b))) for a, b in zip(v, want)) for k, v in errs.items()}


def _write_graph_picture(proto, path):
    from kgraph.lower.dot import onnx_to_dot
    dot = onnx_to_dot(proto)
    if path.endswith(".dot"):
        with open(path, "w") as f:
            f.write(dot)
        return path
    fmt = os.path.splitext(path)[1].lstrip(".")
    if shutil.which("dot") is None:
        fallback = os.path.splitext(path)[0] + ".dot"
        with open(fallback, "w") as f:
            f.write(dot)
        click.echo(f"Graphviz `dot` not found: wrote DOT to {fallback} instead of {path}")
        return fallback
    subprocess.run(["dot", f"-T{fmt}", "-o", path], input=dot.encode(), check=True)
    return path


@click.group()
@click.version_option(package_name="kgraph")
def main():
    """kgraph: Keras models compiled to ONNX, run and trained by onnxruntime."""


@main.command("compile")
@click.argument("src")
@click.option("-o", "--out", default=None, help="Output .onnx path (default: <model name>.onnx), "
              "or the output folder with --training.")
@click.option("--opset", default=None, type=int, help="ONNX opset (18-21; default 18).")
@click.option("--target", type=click.Choice(["portable", "onnxruntime"]), default="portable", show_default=True,
              help="portable: standard ONNX only; onnxruntime: may use contrib fused ops.")
@click.option("--no-fuse", is_flag=True, help="Skip the fusion passes.")
@click.option("--passes", default=None, help="Comma-separated inference passes to run instead of the default pipeline.")
@click.option("--dump-ir", "dump_ir", default=None, type=click.Path(file_okay=False),
              help="Write the IR (text and DOT) after each pass into this folder and print node counts.")
@click.option("--graph", "graph_file", default=None, help="Write a picture of the compiled graph (.svg/.png/.dot).")
@click.option("--batch", default=None, type=int, help="Fix the batch size (default: dynamic).")
@click.option("--training", is_flag=True, help="Export train-step/eval/predict graphs, state and a manifest.")
@click.option("--check", is_flag=True, help="Check with onnx.checker; compare onnxruntime and onnx.reference with predict.")
def compile_cmd(src, out, opset, target, no_fuse, passes, dump_ir, graph_file, batch, training, check):
    """Compile SRC (zoo name, module:function, .py file, Keras .h5/.keras) to ONNX."""
    from kgraph.export import OPSET, compile_inference, export_training, save_onnx, serving_metadata
    from kgraph.passes.infra import PASSES
    from kgraph.passes.pipelines import PIPELINES

    if opset is not None and not 18 <= opset <= 21:
        raise UserError(f"--opset must be between 18 and 21, received {opset}")
    if batch is not None and batch < 1:
        raise UserError(f"--batch must be a positive integer, received {batch}")
    pass_list = None
    if passes:
        pass_list = [p.strip() for p in passes.split(",") if p.strip()]
        unknown = [p for p in pass_list if p not in PASSES]
        if unknown:
            raise UserError(f"unknown pass(es) {unknown}; known: {', '.join(sorted(PASSES))}")
    elif no_fuse:
        pass_list = [p for p in PIPELINES["inference"] if not p.startswith("fuse")]
    model = load_model_source(src)
    model.summary()
    if dump_ir:
        os.environ["KGRAPH_DUMP_IR"] = dump_ir
    try:
        if training:
            from kgraph import models_zoo
            if not getattr(model, "compiled", False):
                entry = models_zoo.ZOO.get(src)
                if entry is None:
                    raise UserError("--training needs a compiled model (compile() in build()) or a zoo name")
                entry.compile(model)
            out = out or f"{model.name}_training"
            manifest = export_training(model, out, batch_size=batch or 32)
            click.echo(f"wrote {out}/: {', '.join(manifest['files'].values())}, state.npz, manifest.json")
            return
        proto = compile_inference(model, metadata=serving_metadata(model), target=target,
                                  opset=opset or OPSET, batch=batch, passes=pass_list)
    finally:
        os.environ.pop("KGRAPH_DUMP_IR", None)
    if dump_ir:
        summary = os.path.join(dump_ir, f"{model.name}.inference.summary.txt")
        if os.path.exists(summary):
            click.echo(open(summary).read().rstrip())
    if check:
        errs = _check_against_predict(model, proto)
        click.echo("check: onnx.checker ok; max abs diff vs predict: " +
                   ", ".join(f"{k} {v:.2e}" for k, v in errs.items()))
        if max(errs.values()) > 1e-4:
            raise UserError(f"check failed: outputs differ from predict by up to {max(errs.values()):.2e}")
    out = out or f"{model.name}.onnx"
    save_onnx(proto, out)
    click.echo(f"wrote {out} ({os.path.getsize(out):,} bytes, opset {proto.opset_import[0].version}, "
               f"{len(proto.graph.node)} nodes)")
    if graph_file:
        click.echo(f"wrote {_write_graph_picture(proto, graph_file)}")


@main.command("run")
@click.argument("model_file", type=click.Path())
@click.option("--input", "inputs", multiple=True, required=True,
              help="An .npy file per model input (NAME=FILE or FILE, in input order).")
@click.option("-o", "--out", default=None, help="Write the first output to this .npy (else print a summary).")
def run_cmd(model_file, inputs, out):
    """Run an ONNX MODEL_FILE with onnxruntime on .npy inputs."""
    import numpy as np
    import onnxruntime as ort

    if not os.path.exists(model_file):
        raise UserError(f"no such file: {model_file}")
    try:
        sess = ort.InferenceSession(model_file, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise UserError(f"cannot load {model_file}: {str(e).splitlines()[0]}") from None
    names = [i.name for i in sess.get_inputs()]
    feeds = {}
    for k, spec in enumerate(inputs):
        name, path = spec.split("=", 1) if "=" in spec else (names[k] if k < len(names) else f"#{k}", spec)
        if name not in names:
            raise UserError(f"{model_file} has inputs {names}; received an input for '{name}'")
        if not os.path.exists(path):
            raise UserError(f"no such file: {path}")
        arr = np.load(path)
        want = sess.get_inputs()[names.index(name)].type
        feeds[name] = arr.astype(np.float32) if "float" in want and arr.dtype != np.float32 else arr
    missing = [n for n in names if n not in feeds]
    if missing:
        raise UserError(f"missing input(s) {missing}; pass --input NAME=FILE.npy")
    try:
        results = sess.run(None, feeds)
    except Exception as e:
        raise UserError(f"run failed: {str(e).splitlines()[0]}") from None
    if out:
        np.save(out, results[0])
        click.echo(f"wrote {out} {results[0].shape}")
    for o, r in zip(sess.get_outputs(), results):
        click.echo(f"{o.name}: shape {r.shape}, dtype {r.dtype}, mean {float(np.mean(r)):.6g}")


@main.command("inspect")
@click.argument("path", type=click.Path())
def inspect_cmd(path):
    """Describe an .onnx, .h5 or .keras file: layers or nodes, shapes, parameters, opsets."""
    import numpy as np
    if not os.path.exists(path):
        raise UserError(f"no such file: {path}")
    if path.endswith(".onnx"):
        import onnx
        try:
            proto = onnx.load(path)
        except Exception as e:
            raise UserError(f"cannot read {path}: {str(e).splitlines()[0]}") from None
        g = proto.graph
        params = sum(int(np.prod(t.dims)) for t in g.initializer)
        opsets = ", ".join(f"{o.domain or 'ai.onnx'}:{o.version}" for o in proto.opset_import)
        click.echo(f"{path}: producer {proto.producer_name} {proto.producer_version}, "
                   f"IR v{proto.ir_version}, opsets {opsets}")
        for kind, vis in (("input", g.input), ("output", g.output)):
            for vi in vis:
                dims = [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]
                click.echo(f"  {kind} {vi.name}: {dims}")
        counts = {}
        for n in g.node:
            counts[n.op_type] = counts.get(n.op_type, 0) + 1
        click.echo(f"  {len(g.node)} nodes: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
        click.echo(f"  {params:,} parameters in {len(g.initializer)} initializers")
        return
    if path.endswith((".h5", ".hdf5", ".keras")):
        model = load_model_source(path)
        model.summary()
        return
    raise UserError(f"cannot inspect {path}: expected an .onnx, .h5 or .keras file")


@main.command("train")
@click.argument("name")
@click.option("--epochs", default=None, type=int, help="Epochs (default: the zoo entry's).")
@click.option("--batch-size", default=32, show_default=True, type=int)
@click.option("-o", "--out", default=None, help="Save the trained model here (.h5 or .keras) and its ONNX beside.")
@click.option("--verbose", default=1, show_default=True, type=click.IntRange(0, 2))
@click.option("--np", "nprocs", default=1, show_default=True, type=click.IntRange(1),
              help="Data-parallel training on this many processes (runs itself under mpiexec; "
                   "--batch-size is the global batch).")
def train_cmd(name, epochs, batch_size, out, verbose, nprocs):
    """Train zoo model NAME on its bundled data set and print the test metrics."""
    import contextlib

    from kgraph import distribute, models_zoo
    from kgraph.export import export_model

    if name not in models_zoo.ZOO:
        raise UserError(f"unknown zoo model '{name}'; available: {', '.join(sorted(models_zoo.ZOO))}")
    # data-parallel: N copies of this command under mpiexec, each joining the MPI job
    if nprocs > 1 and not distribute.launched_by_mpi():
        from kgraph.distribute.launch import relaunch
        argv = ["train", name, "--batch-size", str(batch_size), "--verbose", str(verbose), "--np", str(nprocs)]
        argv += (["--epochs", str(epochs)] if epochs else []) + (["-o", out] if out else [])
        try:
            sys.exit(relaunch(nprocs, argv))
        except FileNotFoundError as e:
            raise UserError(str(e)) from None
    strategy = distribute.MPIStrategy() if distribute.launched_by_mpi() else None
    entry = models_zoo.ZOO[name]
    (x_train, y_train), (x_test, y_test) = entry.data()
    model = entry.build()
    with strategy.scope() if strategy else contextlib.nullcontext():
        entry.compile(model)
    if distribute.is_chief():
        model.summary()
    model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs or entry.epochs,
              validation_split=0.1, verbose=verbose)
    logs = model.evaluate(x_test, y_test, verbose=0, return_dict=True)
    if not distribute.is_chief():   # rank 0 reports and writes the files
        return
    click.echo("test " + " - ".join(f"{k}: {v:.4f}" for k, v in logs.items()))
    if out:
        if hasattr(model, "save") and out.endswith((".h5", ".keras")):
            model.save(out)
            onnx_path = os.path.splitext(out)[0] + ".onnx"
        else:
            onnx_path = out
        export_model(model, onnx_path)
        click.echo(f"wrote {out}" + (f" and {onnx_path}" if onnx_path != out else ""))


@main.group("zoo")
def zoo_group():
    """The bundled model zoo."""


@zoo_group.command("list")
def zoo_list():
    """List the zoo's models."""
    from kgraph import models_zoo
    for name, entry in sorted(models_zoo.ZOO.items()):
        click.echo(f"{name:14s} {entry.description}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
