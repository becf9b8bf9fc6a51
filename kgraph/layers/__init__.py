"""Keras layers."""
from kgraph.engine.input_layer import Input, InputLayer  # noqa: F401
from kgraph.engine.layer import Layer  # noqa: F401
from kgraph.layers.activation_layers import ELU, LeakyReLU, PReLU, ReLU, Softmax  # noqa: F401
from kgraph.layers.core import (  # noqa: F401
    Activation, Dense, Dropout, Embedding, Flatten, Identity, Permute, RepeatVector, Reshape)
from kgraph.layers.merge import (  # noqa: F401
    Add, Average, Concatenate, Dot, Maximum, Minimum, Multiply, Subtract, add, average,
    concatenate, dot, maximum, minimum, multiply, subtract)
from kgraph.layers.recurrent import GRU, LSTM, Bidirectional, SimpleRNN  # noqa: F401
