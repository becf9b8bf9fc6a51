"""The one error type of saving and loading: it names the file and what is wrong with it.

A subclass of ValueError, so code written for Keras (which raises ValueError for bad
files) keeps working."""
from __future__ import annotations

import os


class SavingError(ValueError):
    def __init__(self, path, problem: str):
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        super().__init__(f"Model file '{self.path}': {problem}" if self.path else problem)


class FileChanged(SavingError):
    """The file was replaced or changed while it was being loaded (the walk, the reads and
    the parse did not all see one file): the load starts again (kgraph/saving/api.py)."""

    def __init__(self, path):
        super().__init__(path, "the file was replaced or changed while it was being loaded")
