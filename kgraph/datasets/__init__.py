"""Small datasets for kgraph examples and tests: bundled UCI digits, and a local-only MNIST loader."""

from . import digits, mnist

__all__ = ["digits", "mnist"]
