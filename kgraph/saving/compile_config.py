"""The compiled state (optimizer, loss, metrics, loss weights) as Keras writes it: Keras 3's
`compile_config` (in .keras) and the legacy `training_config` (in .h5), and back.

kgraph keeps what compile() resolved (CompiledSpec), so the config is rebuilt from that:
a built-in loss with default options is written by name, like Keras does when compiled
with a string; anything else as a {class_name, config} object.
"""
from __future__ import annotations

from kgraph.saving.config_compat import fit_kwargs
from kgraph.saving.errors import SavingError

OPTIMIZER_CLASSES = ("SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta", "Adamax", "Nadam")


# -- writing ----------------------------------------------------------------------------
def _keras_object(module, obj, config):
    return {"module": module, "class_name": type(obj).__name__, "config": config,
            "registered_name": None}


def optimizer_config(opt) -> dict:
    from kgraph.schedules import LearningRateSchedule
    cfg = opt.get_config()
    lr = opt.learning_rate
    if isinstance(lr, LearningRateSchedule):
        cfg["learning_rate"] = _keras_object("keras.optimizers.schedules", lr, lr.get_config())
    return _keras_object("keras.optimizers", opt, cfg)


def _loss_entry(loss):
    if loss is None:
        return None
    from kgraph import losses
    cls = type(loss)
    if cls is losses.Loss:  # a plain function: by its name (custom_objects resolves it on load)
        return loss.name
    cfg = loss.get_config()
    try:
        default = cls().get_config()
    except TypeError:
        default = None
    if cfg == default:
        return cfg["name"]
    return _keras_object("keras.losses", loss, cfg)


def _metric_entry(mid):
    return mid if isinstance(mid, str) else getattr(mid, "name", str(mid))


def compile_config(model) -> dict | None:
    """Keras 3's compile_config without the optimizer (None when not compiled)."""
    spec = getattr(model, "_compiled_spec", None)
    if not getattr(model, "compiled", False) or spec is None:
        return None
    names = model.output_names()
    losses = [_loss_entry(l) for l in spec.losses]
    metrics = None
    if spec.metric_ids:
        if len(names) == 1:
            metrics = [_metric_entry(m) for _, m in spec.metric_ids]
        else:
            metrics = {n: [_metric_entry(m) for oi, m in spec.metric_ids if oi == i]
                       for i, n in enumerate(names)}
            metrics = {k: v for k, v in metrics.items() if v}
    weights = None if all(w == 1.0 for w in spec.loss_weights) else list(spec.loss_weights)
    return {"loss": losses[0] if len(losses) == 1 else losses, "loss_weights": weights,
            "metrics": metrics, "weighted_metrics": None, "run_eagerly": False,
            "steps_per_execution": 1, "jit_compile": False}


def training_config(model) -> dict | None:
    """The legacy .h5 `training_config`: compile_config plus `optimizer_config`."""
    cfg = compile_config(model)
    if cfg is None:
        return None
    opt = optimizer_config(model.optimizer)
    cfg["optimizer_config"] = {"class_name": opt["class_name"], "config": opt["config"]}
    return cfg


# -- reading ----------------------------------------------------------------------------
def optimizer_from_config(cfg, display, custom_objects=None):
    from kgraph import optimizers, schedules
    if isinstance(cfg, str):
        try:
            return optimizers.get(cfg)
        except ValueError as e:
            raise SavingError(display, f"unknown optimizer: {e}") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("class_name"), str):
        raise SavingError(display, f"the optimizer config should be an object with a class_name, "
                                   f"found {cfg!r}")
    name = cfg["class_name"].split(">")[-1]  # tf.keras 2.11+ writes "Custom>Adam"
    custom = (custom_objects or {}).get(cfg["class_name"])
    cls = custom or next((getattr(optimizers, c) for c in OPTIMIZER_CLASSES if c.lower() == name.lower()), None)
    if cls is None:
        raise SavingError(display, f"optimizer class '{cfg['class_name']}' is not supported by kgraph "
                                   f"(supported: {', '.join(OPTIMIZER_CLASSES)})")
    conf = dict(cfg.get("config") or {})
    if "lr" in conf and "learning_rate" not in conf:  # Keras 2.2
        conf["learning_rate"] = conf.pop("lr")
    conf.pop("lr", None)
    lr = conf.get("learning_rate")
    if isinstance(lr, dict):
        sname = lr.get("class_name")
        scls = getattr(schedules, sname, None) if isinstance(sname, str) else None
        if not isinstance(scls, type) or not issubclass(scls, schedules.LearningRateSchedule):
            raise SavingError(display, f"learning-rate schedule '{sname}' is not supported by kgraph")
        conf["learning_rate"] = scls(**fit_kwargs(scls, lr.get("config") or {}, display,
                                                  f"learning-rate schedule {sname}"))
    for k in ("decay", "use_ema", "ema_momentum", "ema_overwrite_frequency", "loss_scale_factor",
              "gradient_accumulation_steps", "is_legacy_optimizer", "jit_compile"):
        if k in conf and k not in ("ema_momentum",) and conf[k] not in (None, False, 0, 0.0):
            raise SavingError(display, f"optimizer option `{k}={conf[k]!r}` is not supported by kgraph")
        conf.pop(k, None)
    try:
        return cls(**(conf if custom else fit_kwargs(cls, conf, display, f"optimizer {name}")))
    except (TypeError, ValueError) as e:
        raise SavingError(display, f"cannot create the optimizer {name}: {e}") from None


def _loss_from(entry, display, custom_objects):
    from kgraph import losses
    if entry is None:
        return None
    custom = custom_objects or {}
    if isinstance(entry, str):
        if entry in custom:
            return custom[entry]
        try:
            return losses.get(entry)
        except ValueError as e:
            raise SavingError(display, f"unknown loss: {e}") from None
    if isinstance(entry, dict) and isinstance(entry.get("class_name"), str):
        cname = entry["class_name"]
        conf = dict(entry.get("config") or {})
        if cname in custom:
            return custom[cname](**conf) if isinstance(custom[cname], type) else custom[cname]
        if cname in ("LossFunctionWrapper", "function") or isinstance(entry.get("config"), str):
            fn = conf.get("fn") if isinstance(conf, dict) else entry["config"]
            return _loss_from(fn, display, custom_objects)
        cls = getattr(losses, cname, None)
        if not isinstance(cls, type) or not issubclass(cls, losses.Loss):
            raise SavingError(display, f"loss class '{cname}' is not supported by kgraph")
        if conf.get("reduction") in ("auto", None):  # tf.keras 2
            conf["reduction"] = "sum_over_batch_size"
        if conf.get("axis", -1) == -1:
            conf.pop("axis", None)
        try:
            return cls(**fit_kwargs(cls, conf, display, f"loss {cname}"))
        except (TypeError, ValueError) as e:
            raise SavingError(display, f"cannot create the loss {cname}: {e}") from None
    raise SavingError(display, f"cannot read the loss entry {entry!r}")


def _metric_from(entry, display):
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict):
        conf = entry.get("config")
        if isinstance(conf, dict):
            for key in ("name", "fn"):
                if isinstance(conf.get(key), str):
                    return conf[key]
        if isinstance(conf, str):
            return conf
    raise SavingError(display, f"cannot read the metric entry {entry!r}")


def _metrics_from(cfg, display, n_outputs):
    if cfg is None:
        return None
    if isinstance(cfg, dict):
        return {k: [_metric_from(m, display) for m in (v if isinstance(v, list) else [v])]
                for k, v in cfg.items()}
    if not isinstance(cfg, list):
        raise SavingError(display, f"cannot read the metrics {cfg!r}")
    if cfg and all(isinstance(m, list) for m in cfg):  # per output (tf.keras 2 nests even one)
        if n_outputs == 1:
            return [_metric_from(m, display) for group in cfg for m in group]
        return [[_metric_from(m, display) for m in group] for group in cfg]
    return [_metric_from(m, display) for m in cfg]


def compile_args(cfg, display, model, custom_objects=None, optimizer_cfg=None) -> dict:
    """compile() arguments from a compile_config / training_config."""
    if not isinstance(cfg, dict):
        raise SavingError(display, f"the training config should be an object, found {type(cfg).__name__}")
    opt_cfg = optimizer_cfg if optimizer_cfg is not None else cfg.get("optimizer_config", cfg.get("optimizer"))
    if opt_cfg is None:
        raise SavingError(display, "the training config has no optimizer")
    loss = cfg.get("loss")
    if isinstance(loss, list):
        loss = [_loss_from(l, display, custom_objects) for l in loss]
        if len(loss) == 1 and len(model.outputs) == 1:
            loss = loss[0]
    elif isinstance(loss, dict) and "class_name" not in loss:
        loss = {k: _loss_from(v, display, custom_objects) for k, v in loss.items()}
    else:
        loss = _loss_from(loss, display, custom_objects)
    if loss is None:
        raise SavingError(display, "the training config has no loss")
    weights = cfg.get("loss_weights")
    if weights is not None and not isinstance(weights, (list, dict)):
        raise SavingError(display, f"cannot read the loss weights {weights!r}")
    return {"optimizer": optimizer_from_config(opt_cfg, display, custom_objects), "loss": loss,
            "loss_weights": weights,
            "metrics": _metrics_from(cfg.get("metrics"), display, len(model.outputs))}
