"""kgraph: Keras models compiled to standard ONNX, run and trained by onnxruntime."""
from kgraph import activations, initializers, layers, models, regularizers, utils  # noqa: F401
from kgraph.engine.input_layer import Input  # noqa: F401
from kgraph.models import Model, Sequential  # noqa: F401

__version__ = "0.1.0"
from kgraph import callbacks, config, datasets, losses, metrics, optimizers, schedules  # noqa: F401,E402
