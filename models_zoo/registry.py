"""The zoo's table: each entry is a module with `build()`, `compile(model)`, `data()`,
`EPOCHS` and a docstring naming its data and expected accuracy."""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

NAMES = ["mlp", "lenet", "resnet", "vgg", "text_lstm", "gru", "autoencoder", "two_input", "multi_output"]


@dataclass
class ZooEntry:
    name: str
    description: str
    build: Callable
    compile: Callable
    data: Callable
    epochs: int


def _entry(name):
    module = importlib.import_module(f"kgraph.models_zoo.{name}")
    doc = " ".join((module.__doc__ or name).split())
    return ZooEntry(name, doc.split(". ")[0].rstrip("."), module.build, module.compile, module.data,
                    module.EPOCHS)


ZOO = {name: _entry(name) for name in NAMES}
