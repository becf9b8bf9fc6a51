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


def _forward_and_loss(compiled, model, training, y_specs, name):
    g, xs, outs, ctx = model.trace_graph(training=training, name=name)
    sig = StepSignature(data_inputs=model.input_names())
    ys = []
    for (oname, shape, dtype), out in zip(y_specs, outs):
        ys.append(g.add_input(f"y_true/{oname}", shape, dtype))
        sig.data_inputs.append(f"y_true/{oname}")
    sw = g.add_input("sample_weight", (None,), np.float32)
    sig.data_inputs.append("sample_weight")
    with ops.building(g):
        total = None
        metric_vals = []
        for i, (loss, lw, y, p) in enumerate(zip(compiled.losses, compiled.loss_weights, ys, outs)):
            if loss is None:
                continue
            yc = ops.cast(y, p.dtype)
            per = loss.per_sample(yc, p)
            w = sw
            while w.type.rank < per.type.rank:
                w = ops.unsqueeze(w, -1)
            weighted = per * w if per.type.rank else per * ops.reduce_mean(sw)
            if loss.reduction in ("sum_over_batch_size", "mean"):
                value = ops.reduce_sum(weighted) / ops.numel(per)
            else:
                value = ops.reduce_sum(weighted)
            term = value * lw if lw != 1.0 else value
            total = term if total is None else total + term
        for oi, metric in compiled.metrics:
            y, p = ys[oi], outs[oi]
            vals = metric.partials(ops.cast(y, p.dtype), p, sw)
            metric_vals.append(vals)
        for penalty in ctx.losses:
            total = total + penalty
        for var, _ in list(bound_variables(g)):
            if var.regularizer is not None and var.trainable:
                total = total + var.regularizer(var.__ir_value__(g))
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
        slots = []
        for var, v in train_pairs:
            s = {}
            for sname in opt.slot_names:
                iname = f"slot/{var.path}/{sname}"
                s[sname] = g.add_input(iname, var.shape, var.dtype)
                sig.slot_inputs.append((iname, (var.path, sname)))
            slots.append(s)
        gslots = {}
        for gname, init in opt.global_slots().items():
            iname = f"global/{gname}"
            gslots[gname] = g.add_input(iname, np.shape(init), np.float32)
            sig.slot_inputs.append((iname, ("", gname)))
        new_p, new_s, new_g = opt.build_update([v for _, v in train_pairs], grads, slots, gslots, lr, t)
    for (var, v), p2, s2 in zip(train_pairs, new_p, new_s):
        iname = _input_name(g, v)
        named.append((f"new/{iname}", p2))
        sig.feedback.append((f"new/{iname}", iname))
        for sname, val in s2.items():
            sin = f"slot/{var.path}/{sname}"
            named.append((f"new/{sin}", val))
            sig.feedback.append((f"new/{sin}", sin))
    for gname, val in new_g.items():
        named.append((f"new/global/{gname}", val))
        sig.feedback.append((f"new/global/{gname}", f"global/{gname}"))
    for name, val in updates:
        named.append((name, val))
        sig.feedback.append((name, name[len("new/"):]))
    g.set_outputs(named)
    run_pipeline("training", g)
    return g, sig
