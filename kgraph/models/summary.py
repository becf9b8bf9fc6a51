"""`model.summary()` in Keras 3's table form."""
from __future__ import annotations

import numpy as np


def readable_size(n_bytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n_bytes < 1024 or unit == "TB":
            return f"{n_bytes:.2f} {unit}"
        n_bytes /= 1024


def _shape_str(shape):
    if isinstance(shape, list):
        return "[" + ", ".join(_shape_str(s) for s in shape) + "]"
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + (",)" if len(shape) == 1 else ")")


def _count(weights):
    return int(sum(np.prod(w.shape, dtype=np.int64) for w in weights))


def _nbytes(weights):
    return int(sum(np.prod(w.shape, dtype=np.int64) * w.dtype.itemsize for w in weights))


def _row(cells, widths, aligns, left="│", sep="│", right="│"):
    parts = []
    for c, w, a in zip(cells, widths, aligns):
        c = c if len(c) <= w - 2 else c[: w - 3] + "…"
        parts.append(" " + (c.rjust(w - 2) if a == "r" else c.ljust(w - 2)) + " ")
    return left + sep.join(parts) + right


def print_summary(model, line_length=None, positions=None, print_fn=None):
    from kgraph.engine.input_layer import InputLayer
    from kgraph.models.sequential import Sequential

    print_fn = print_fn or print
    sequential = isinstance(model, Sequential)
    layers = model.layers
    if sequential:
        headers, aligns = ["Layer (type)", "Output Shape", "Param #"], ["l", "l", "r"]
        widths = [33, 24, 15]
    else:
        headers, aligns = ["Layer (type)", "Output Shape", "Param #", "Connected to"], ["l", "l", "r", "l"]
        widths = [29, 24, 13, 24]
    rows = []
    model_nodes = {id(n) for n in model._nodes}
    for layer in layers:
        if isinstance(layer, InputLayer):
            shape = layer.batch_shape
        else:
            node = next((n for n in layer._inbound_nodes if id(n) in model_nodes), layer._inbound_nodes[0])
            outs = [t.shape for t in node.outputs]
            shape = outs[0] if len(outs) == 1 else outs
        kind = "Functional" if type(layer).__name__ == "Model" else type(layer).__name__  # as Keras
        cells = [f"{layer.name} ({kind})", _shape_str(shape), f"{layer.count_params():,}"]
        if not sequential:
            conn = []
            for node in layer._inbound_nodes:
                if id(node) in model_nodes:
                    conn += [f"{t._history[0].name}[{t._history[1]}][{t._history[2]}]" for t in node.inputs]
            cells.append(", ".join(conn) if conn else "-")
        rows.append(cells)
    bar = lambda l, m, r, ch: l + m.join(ch * w for w in widths) + r  # noqa: E731
    lines = [f'Model: "{model.name}"', bar("┏", "┳", "┓", "━"),
             _row(headers, widths, ["l"] * len(widths), "┃", "┃", "┃"), bar("┡", "╇", "┩", "━")]
    for i, cells in enumerate(rows):
        lines.append(_row(cells, widths, aligns))
        if i < len(rows) - 1:
            lines.append(bar("├", "┼", "┤", "─"))
    lines.append(bar("└", "┴", "┘", "─"))
    tw, ntw = model.trainable_weights, model.non_trainable_weights
    total = tw + ntw
    lines.append(f" Total params: {_count(total):,} ({readable_size(_nbytes(total))})")
    lines.append(f" Trainable params: {_count(tw):,} ({readable_size(_nbytes(tw))})")
    lines.append(f" Non-trainable params: {_count(ntw):,} ({readable_size(_nbytes(ntw))})")
    opt = getattr(model, "optimizer", None)
    if opt is not None and getattr(opt, "variables_count", None):
        lines.append(f" Optimizer params: {opt.variables_count():,}")
    print_fn("\n".join(lines))
