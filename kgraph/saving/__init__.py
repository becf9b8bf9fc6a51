"""Keras-compatible files: legacy `.h5`, Keras 3 `.weights.h5` and `.keras`, both ways.

`load_model` and `save_model` are imported on first use, so that importing
kgraph.saving.preflight (kgraph/__init__.py does, first of all) does not pull in the
model code."""
from kgraph.saving.errors import SavingError  # noqa: F401


def __getattr__(name):
    if name in ("load_model", "save_model"):
        from kgraph.saving import api
        return getattr(api, name)
    raise AttributeError(f"module 'kgraph.saving' has no attribute '{name}'")
