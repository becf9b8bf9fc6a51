"""Keras-style automatic names: `dense`, `dense_1`, ... per prefix."""
import re
from collections import defaultdict

_COUNTS: dict[str, int] = defaultdict(int)


def unique_name(prefix: str) -> str:
    n = _COUNTS[prefix]
    _COUNTS[prefix] += 1
    return prefix if n == 0 else f"{prefix}_{n}"


def snake_case(name: str) -> str:
    s = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", s).lower()


def reset():
    _COUNTS.clear()
