"""Dense autoencoder 64-32-8-32-64 on the bundled digits: reconstructs the 8x8 image
through an 8-unit code. Test reconstruction MSE ~0.02-0.03 after 20 epochs."""
import kgraph
from kgraph import layers
from kgraph.models_zoo import data as zoo_data

EPOCHS = 20


def build():
    inp = kgraph.Input(shape=(64,), name="image")
    code = layers.Dense(8, activation="relu", name="code")(layers.Dense(32, activation="relu")(inp))
    out = layers.Dense(64, activation="sigmoid", name="reconstruction")(layers.Dense(32, activation="relu")(code))
    return kgraph.Model(inp, out, name="autoencoder")


def compile(model):  # noqa: A001
    model.compile(optimizer=kgraph.optimizers.Adam(learning_rate=0.003), loss="mse", metrics=["mae"])


def data():
    (x_train, _), (x_test, _) = zoo_data.digits("flat")
    return (x_train, x_train), (x_test, x_test)
