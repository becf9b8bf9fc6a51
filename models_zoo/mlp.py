"""A multilayer perceptron for the bundled 8x8 digits (64 inputs, 10 classes)."""
import kgraph
from kgraph import layers


def build(input_dim=64, hidden=(256, 128), classes=10):
    model = kgraph.Sequential(name="mlp")
    model.add(kgraph.Input(shape=(input_dim,)))
    for units in hidden:
        model.add(layers.Dense(units, activation="relu"))
    model.add(layers.Dense(classes, activation="softmax"))
    return model
