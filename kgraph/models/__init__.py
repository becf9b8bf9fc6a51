"""Models: Sequential and Functional."""
from kgraph.models.functional import Model  # noqa: F401
from kgraph.models.sequential import Sequential  # noqa: F401
from kgraph.models.serialization import clone_model, model_from_json  # noqa: F401
from kgraph.saving.api import load_model  # noqa: F401
