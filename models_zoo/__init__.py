"""Bundled models, each with the data set it trains on (no downloads)."""
from kgraph.models_zoo.registry import ZOO  # noqa: F401
