"""The model's architecture in a file: the JSON written (as Keras 3 writes it, so real Keras
rebuilds the model) and the model rebuilt from a file's JSON."""
from __future__ import annotations

from kgraph.saving import config_compat, layout
from kgraph.saving.errors import SavingError


def keras_config(model) -> dict:
    """`config.json`'s model entry (without compile_config)."""
    from kgraph.models.serialization import serialize_layer
    cfg = serialize_layer(model)
    if not layout.is_sequential(model):
        cfg["module"] = "keras.src.models.functional"
    return cfg


def legacy_config(model) -> dict:
    """The `.h5` file's `model_config`: class name and config only."""
    cfg = keras_config(model)
    return {"class_name": cfg["class_name"], "config": cfg["config"]}


def build(raw, display, custom_objects=None):
    """A model rebuilt from a file's model entry (Keras 3 or tf.keras 2 form)."""
    from kgraph.models.serialization import deserialize_layer
    if not isinstance(raw, dict):
        raise SavingError(display, f"the model config should be a JSON object, found {type(raw).__name__}")
    try:
        cfg = config_compat.normalize(raw, display, custom_objects)
    except RecursionError:
        raise SavingError(display, "the model config is nested too deeply") from None
    if cfg["class_name"] not in config_compat.MODEL_CLASSES:
        raise SavingError(display, f"the config describes a '{cfg['class_name']}' layer, not a model")
    try:
        model = deserialize_layer(cfg, custom_objects)
    except SavingError:
        raise
    except Exception as e:  # a layer's constructor may raise anything on a hostile config
        raise SavingError(display, f"cannot rebuild the model from its config: "
                                   f"{type(e).__name__}: {e}") from None
    if not getattr(model, "built", False):
        raise SavingError(display, "the model config has no input shape, so the model cannot be built")
    return model
