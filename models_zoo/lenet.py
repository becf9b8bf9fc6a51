"""LeNet-style CNN on the bundled 8x8 digits (channels_last): Conv2D-MaxPooling2D twice,
Dropout, Dense. Test accuracy ~0.97-0.99 after 15 epochs."""
import kgraph
from kgraph import layers
from kgraph.models_zoo import data as zoo_data

EPOCHS = 15


def build():
    return kgraph.Sequential([
        kgraph.Input(shape=(8, 8, 1)),
        layers.Conv2D(16, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(2),
        layers.Conv2D(32, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(2),
        layers.Flatten(),
        layers.Dropout(0.25),
        layers.Dense(64, activation="relu"),
        layers.Dense(10, activation="softmax"),
    ], name="lenet")


def compile(model):  # noqa: A001
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])


def data():
    return zoo_data.digits("image")
