"""Keras-compatible files: legacy `.h5`, Keras 3 `.weights.h5` and `.keras`, both ways."""
from kgraph.saving.api import load_model, save_model  # noqa: F401
from kgraph.saving.errors import SavingError  # noqa: F401
