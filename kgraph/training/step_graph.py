"""Builds the train-step and eval graphs in the IR.

train step: x..., y..., sample_weight, lr, t, params..., slots..., globals...
            -> loss, metric partials..., params'..., slots'..., globals'..., state'...
eval:       x..., y..., sample_weight, params..., state... -> loss, metric partials...

Forward + loss + regularization + reverse-mode autodiff + optimizer update form one
standard-ONNX graph, so one onnxruntime call runs a whole step.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kgraph import config
from kgraph.engine.variable import bound_variables
from kgraph.ir import ops
from kgraph.passes.autodiff import gradients
from kgraph.passes.pipelines import run_pipeline


@dataclass
class StepSignature:
    """Names of a step graph's inputs and outputs, grouped by role."""
    data_inputs: list = field(default_factory=list)     # x..., y..., sample_weight
    weight_inputs: list = field(default_factory=list)   # (graph input name, Variable)
    slot_inputs: list = field(default_factory=list)     # (graph input name, slot key)
    scalar_inputs: list = field(default_factory=list)   # lr, t
    metric_outputs: list = field(default_factory=list)  # (metric index, output names)
    loss_output: str = "loss"
    # (output name, input name it feeds next step)
    feedback: list = field(default_factory=list)


def _input_name(g, v):
    return g.g.nodes[v.node]["attrs"]["name"]


def reduced_loss(loss, y, p, sw):
    """One output's batch loss: per-sample values weighted by sample_weight, reduced as
    the loss's reduction says (Keras's sum_over_batch_size divides by the entry count)."""
    per = loss.per_sample(y, p)
    w = sw
    while w.type.rank < per.type.rank:
        w = ops.unsqueeze(w, -1)
    weighted = per * w if per.type.rank else per * ops.reduce_mean(sw)
    if loss.reduction in ("sum_over_batch_size", "mean"):
        return ops.reduce_sum(weighted) / ops.numel(per)
    return ops.reduce_sum(weighted)


def _forward_and_loss(compiled, model, training, y_specs, name, sharded=False):
    g, xs, outs, ctx = model.trace_graph(training=training, name=name)
    sig = StepSignature(data_inputs=model.input_names())
    ys = []
    for (oname, shape, dtype), out in zip(y_specs, outs):
        ys.append(g.add_input(f"y_true/{oname}", shape, dtype))
        sig.data_inputs.append(f"y_true/{oname}")
    sw = g.add_input("sample_weight", (None,), np.float32)
    sig.data_inputs.append("sample_weight")
    # sharded (data-parallel): the terms that are means over the batch are scaled by this
    # rank's share of the global batch, so the ranks' losses add up to the global loss
    share = g.add_input("shard_scale", (), np.float32) if sharded else None
    with ops.building(g):
        total = None
        metric_vals = []
        for i, (loss, lw, y, p) in enumerate(zip(compiled.losses, compiled.loss_weights, ys, outs)):
            if loss is None:
                continue
            value = reduced_loss(loss, ops.cast(y, p.dtype), p, sw)
            if sharded and loss.reduction in ("sum_over_batch_size", "mean"):
                value = value * share
            term = value * lw if lw != 1.0 else value
            total = term if total is None else total + term
        for oi, metric in compiled.metrics:
            y, p = ys[oi], outs[oi]
            vals = metric.partials(ops.cast(y, p.dtype), p, sw)
            metric_vals.append(vals)
        for penalty in ctx.losses:  # batch means (activity regularizers divide by the batch size)
            total = total + (penalty * share if sharded else penalty)
        for var, _ in list(bound_variables(g)):
            if var.regularizer is not None and var.trainable:
                penalty = var.regularizer(var.__ir_value__(g))
                total = total + (penalty * share if sharded else penalty)
    return g, sig, total, metric_vals, ctx


def _add_metric_outputs(g, sig, total, metric_vals):
    named = [("loss", total)]
    for mi, vals in enumerate(metric_vals):
        names = [f"metric{mi}/{k}" for k in range(len(vals))]
        sig.metric_outputs.append((mi, names))
        named += list(zip(names, vals))
    return named


def build_eval_graph(compiled, model, y_specs):
    g, sig, total, metric_vals, _ = _forward_and_loss(compiled, model, False, y_specs, model.name + "_eval")
    named = _add_metric_outputs(g, sig, total, metric_vals)
    sig.weight_inputs = [(_input_name(g, v), var) for var, v in bound_variables(g)]
    g.set_outputs(named)
    run_pipeline("training", g)
    return g, sig


@dataclass(frozen=True)
class SlotSpec:
    """What one slot input of a step graph holds: the slot `slot` ('m', 'momentum', ...)
    of the variables `parts` ((variable path, shape), ...), laid end to end when there are
    several (a flat slot: one flat buffer instead of one small tensor per variable);
    no parts for an optimizer-global slot (Nadam's u_product)."""
    slot: str
    parts: tuple = ()

    @property
    def flat(self) -> bool:
        return len(self.parts) > 1

    def keys(self):
        """The per-variable slot keys ((variable path, slot name)) inside, in order."""
        return [(path, self.slot) for path, _ in self.parts] if self.parts else [("", self.slot)]


def _flat_group(train_pairs):
    """Indices of the trainable variables whose update runs on one flat buffer.

    The optimizer's update is a dozen elementwise kernels per variable; for small
    variables their launch cost dominates, and onnxruntime fuses no elementwise ops on
    the CPU. Laid end to end, small variables share one kernel each (FACTS.md: 'flat
    Adam'). Large variables stay apart: for them the launch is cheap and the copies in
    and out of the flat buffer are not."""
    limit = config.flat_update_max_size()
    idx = [i for i, (var, _) in enumerate(train_pairs)
           if np.dtype(var.dtype) == np.float32 and int(np.prod(var.shape, dtype=np.int64)) <= limit]
    return idx if len(idx) > 1 else []


def _optimizer_step(graph, sig, opt, train_pairs, params, grads, lr, t, names_of):
    """The optimizer update inside `graph`: one input per slot (recorded in `sig` with its
    SlotSpec), the update, and the named outputs that feed the next step's weight and
    slot inputs (recorded in sig.feedback). Gradients are clipped per tensor first (as
    Keras does); then the small variables are updated as one flat tensor. Call inside
    `ops.building(graph)`."""
    grads = opt.clip(grads)
    group = _flat_group(train_pairs)
    grouped = set(group)
    solo = [i for i in range(len(train_pairs)) if i not in grouped]
    u_params = [params[i] for i in solo]
    u_grads = [grads[i] for i in solo]
    specs = [[SlotSpec(s, ((train_pairs[i][0].path, tuple(train_pairs[i][0].shape)),))
              for s in opt.slot_names] for i in solo]
    u_types = [(train_pairs[i][0].shape, train_pairs[i][0].dtype) for i in solo]
    if group:
        sizes = [int(np.prod(train_pairs[i][0].shape, dtype=np.int64)) for i in group]
        u_params.append(ops.concat([_flat(params[i]) for i in group], axis=0))
        u_grads.append(ops.concat([_flat(grads[i]) for i in group], axis=0))
        parts = tuple((train_pairs[i][0].path, tuple(train_pairs[i][0].shape)) for i in group)
        specs.append([SlotSpec(s, parts) for s in opt.slot_names])
        u_types.append(((sum(sizes),), np.float32))
    slots, slot_names = [], []
    for spec_row, (shape, dtype) in zip(specs, u_types):
        s, names = {}, {}
        for spec in spec_row:
            iname = (f"slot/flat{_digest(spec.parts)}/{spec.slot}" if spec.flat
                     else f"slot/{spec.parts[0][0]}/{spec.slot}")
            s[spec.slot] = graph.add_input(iname, shape, dtype)
            sig.slot_inputs.append((iname, spec))
            names[spec.slot] = iname
        slots.append(s)
        slot_names.append(names)
    gslots = {}
    for gname, init in opt.global_slots().items():
        gslots[gname] = graph.add_input(f"global/{gname}", np.shape(init), np.float32)
        sig.slot_inputs.append((f"global/{gname}", SlotSpec(gname)))
    new_p, new_s, new_g = opt.build_update(u_params, u_grads, slots, gslots, lr, t)
    by_index = dict(zip(solo, new_p))
    if group:
        pieces = ops.split(new_p[-1], sizes, axis=0)
        for i, piece in zip(group, pieces):
            shape = tuple(train_pairs[i][0].shape)
            by_index[i] = piece if len(shape) == 1 else ops.reshape(piece, shape)
    named = []
    for i, (var, _) in enumerate(train_pairs):
        iname = names_of[id(var)]
        named.append((f"new/{iname}", by_index[i]))
        sig.feedback.append((f"new/{iname}", iname))
    for s2, names in zip(new_s, slot_names):
        for sname, val in s2.items():
            named.append((f"new/{names[sname]}", val))
            sig.feedback.append((f"new/{names[sname]}", names[sname]))
    for gname, val in new_g.items():
        named.append((f"new/global/{gname}", val))
        sig.feedback.append((f"new/global/{gname}", f"global/{gname}"))
    return named


def _flat(x):
    return x if len(x.shape) == 1 else ops.reshape(x, (-1,))


def _digest(parts) -> str:
    """A short name for a flat slot's layout: a step graph over other variables (say, after
    freezing a layer) gets a buffer of its own instead of a mis-sized one."""
    import hashlib
    return hashlib.sha1(repr(parts).encode()).hexdigest()[:8]


def build_train_graph(compiled, model, y_specs):
    opt = compiled.optimizer
    g, sig, total, metric_vals, ctx = _forward_and_loss(compiled, model, True, y_specs, model.name + "_train")
    trainable_ids = {id(w) for w in model.trainable_weights}
    bound = bound_variables(g)
    train_pairs = [(var, v) for var, v in bound if id(var) in trainable_ids]
    sig.weight_inputs = [(_input_name(g, v), var) for var, v in bound]
    names_of = {id(var): _input_name(g, v) for var, v in bound}
    named = _add_metric_outputs(g, sig, total, metric_vals)
    updates = [(f"new/{names_of[id(var)]}", val) for var, val in ctx.updates]
    # Forward passes (fusion) run before autodiff, so fused ops get their fused gradients.
    g.set_outputs(named + updates)
    run_pipeline("training_forward", g)
    outs = dict(g.outputs)
    named = [(n, outs[n]) for n, _ in named]
    updates = [(n, outs[n]) for n, _ in updates]
    total = outs["loss"]
    lr = g.add_input("lr", (), np.float32)
    t = g.add_input("t", (), np.float32)
    sig.scalar_inputs = ["lr", "t"]
    with ops.building(g):
        grads = gradients(g, total, [v for _, v in train_pairs])
        named += _optimizer_step(g, sig, opt, train_pairs, [v for _, v in train_pairs], grads, lr, t,
                                 names_of)
    for name, val in updates:
        named.append((name, val))
        sig.feedback.append((name, name[len("new/"):]))
    g.set_outputs(named)
    run_pipeline("training", g)
    return g, sig


# -- data-parallel (kgraph.distribute): the train step split at the gradients ------------
@dataclass
class ReduceLayout:
    """Where each piece lies in the flat float32 buffer that the ranks sum (one Allreduce):
    entries (role, name, shape, dtype, offset, size); roles 'grad' (first, contiguous: the
    update graph reads the prefix of `grad_size` elements), 'state' (new values of
    training-mode state such as BatchNorm moving statistics, pre-scaled by the rank's share),
    'loss' and 'metric' (host outputs)."""
    entries: list = field(default_factory=list)
    grad_size: int = 0
    size: int = 0

    def add(self, role, name, shape, dtype):
        n = int(np.prod(shape, dtype=np.int64))
        self.entries.append((role, name, tuple(shape), np.dtype(dtype), self.size, n))
        self.size += n
        if role == "grad":
            self.grad_size = self.size


def _flat_reduce_output(g, pieces, layout):
    """Concat of the flattened pieces, as float32: the buffer one Allreduce sums."""
    for role, name, val in pieces:
        if None in val.shape:
            raise ValueError(f"data-parallel training needs static shapes for the reduced "
                             f"values; '{name}' has shape {val.shape}")
        layout.add(role, name, val.shape, val.dtype)
    with ops.building(g):
        flat = [ops.reshape(ops.cast(val, np.float32) if val.dtype != np.float32 else val, (-1,))
                for _, _, val in pieces]
        return ops.concat(flat, axis=0) if len(flat) > 1 else flat[0]


def build_sharded_train_graphs(compiled, model, y_specs):
    """The train step split at the gradients for data-parallel training.

    gradient graph: x..., y..., sample_weight, shard_scale, params... -> reduce/flat
        (this rank's gradients of its share of the global loss, its state updates, its
        loss share and metric partials, fused into one float32 buffer: tensor fusion)
    update graph:   grads/flat, lr, t, params..., slots..., globals...
        -> params'..., slots'..., globals'...

    Between the two the ranks sum reduce/flat (one Allreduce per step); the update is then
    the same on every rank, so the weights stay identical. Returns
    (grad_graph, grad_sig, update_graph, update_sig, layout)."""
    from kgraph.ir.graph import Graph
    opt = compiled.optimizer
    g, sig, total, metric_vals, ctx = _forward_and_loss(compiled, model, True, y_specs,
                                                        model.name + "_grad", sharded=True)
    trainable_ids = {id(w) for w in model.trainable_weights}
    bound = bound_variables(g)
    train_pairs = [(var, v) for var, v in bound if id(var) in trainable_ids]
    sig.weight_inputs = [(_input_name(g, v), var) for var, v in bound]
    sig.scalar_inputs = ["shard_scale"]
    names_of = {id(var): _input_name(g, v) for var, v in bound}
    named = _add_metric_outputs(g, sig, total, metric_vals)
    updates = [(names_of[id(var)], val) for var, val in ctx.updates]
    g.set_outputs(named + [(f"new/{n}", val) for n, val in updates])
    run_pipeline("training_forward", g)
    outs = dict(g.outputs)
    share = next(v for v in g.inputs if _input_name(g, v) == "shard_scale")
    with ops.building(g):
        grads = gradients(g, outs["loss"], [v for _, v in train_pairs])
        pieces = [("grad", names_of[id(var)], gr) for (var, _), gr in zip(train_pairs, grads)]
        pieces += [("state", n, outs[f"new/{n}"] * share) for n, _ in updates]
        pieces.append(("loss", "loss", outs["loss"]))
        pieces += [("metric", n, outs[n]) for _, names in sig.metric_outputs for n in names]
    layout = ReduceLayout()
    g.set_outputs([("reduce/flat", _flat_reduce_output(g, pieces, layout))])
    run_pipeline("training", g)

    u = Graph(model.name + "_update")
    usig = StepSignature(data_inputs=["grads/flat"], scalar_inputs=["lr", "t"])
    flat = u.add_input("grads/flat", (layout.grad_size,), np.float32)
    lr = u.add_input("lr", (), np.float32)
    t = u.add_input("t", (), np.float32)
    named = []
    with ops.building(u):
        params, pgrads = [], []
        sizes = [int(np.prod(var.shape, dtype=np.int64)) for var, _ in train_pairs]
        pieces = ops.split(flat, sizes, axis=0) if len(sizes) > 1 else (flat,)
        for (var, _), piece in zip(train_pairs, pieces):
            iname = names_of[id(var)]
            p = u.add_input(iname, var.shape, var.dtype)
            usig.weight_inputs.append((iname, var))
            params.append(p)
            gr = ops.reshape(piece, var.shape)
            pgrads.append(gr if var.dtype == np.float32 else ops.cast(gr, var.dtype))
        named += _optimizer_step(u, usig, opt, train_pairs, params, pgrads, lr, t, names_of)
    u.set_outputs(named)
    run_pipeline("training", u)
    return g, sig, u, usig, layout


def build_sharded_eval_graph(compiled, model, y_specs):
    """Eval graph for data-parallel evaluation: x..., y..., sample_weight, shard_scale,
    params..., state... -> reduce/flat (this rank's loss share and metric partials), which
    the ranks sum. Returns (graph, sig, layout)."""
    g, sig, total, metric_vals, _ = _forward_and_loss(compiled, model, False, y_specs,
                                                      model.name + "_eval", sharded=True)
    named = _add_metric_outputs(g, sig, total, metric_vals)
    sig.weight_inputs = [(_input_name(g, v), var) for var, v in bound_variables(g)]
    sig.scalar_inputs = ["shard_scale"]
    layout = ReduceLayout()
    pieces = [("loss" if n == "loss" else "metric", n, v) for n, v in named]
    g.set_outputs([("reduce/flat", _flat_reduce_output(g, pieces, layout))])
    run_pipeline("training", g)
    return g, sig, layout
