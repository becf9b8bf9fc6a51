"""The `.keras` archive: an uncompressed zip of `metadata.json`, `config.json` and
`model.weights.h5`, exactly those three.

Archives are untrusted input: a member name that is absolute, has `..` or a backslash,
a duplicate, a missing or extra member, or a member whose declared size is out of
proportion to what is stored (a decompression bomb) is refused before anything is read.
The zip's CRC-32 check covers the weights' bytes.
"""
from __future__ import annotations

import datetime
import json
import os
import zipfile

import h5py

from kgraph.saving import h5files
from kgraph.saving.errors import SavingError

MEMBERS = ("metadata.json", "config.json", "model.weights.h5")
MAX_JSON_BYTES = 64 << 20
BOMB_RATIO = 100  # declared size / stored size beyond which a member is refused


# -- writing ----------------------------------------------------------------------------
def write(path, metadata: dict, config: dict, write_weights):
    """The archive at `path`, atomically; `write_weights(h5py.File)` fills model.weights.h5
    (built in a temporary file beside the target, which is faster than in memory)."""
    stamp = datetime.datetime.now().timetuple()[:6]
    with h5files.atomic_path(path) as tmp, h5files.scratch_path(path) as weights_tmp:
        with h5py.File(weights_tmp, "w") as f:
            write_weights(f)
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
            for name, data in (("metadata.json", json.dumps(metadata).encode()),
                               ("config.json", json.dumps(config).encode())):
                info = zipfile.ZipInfo(name, date_time=stamp)
                zf.writestr(info, data)
            zf.write(weights_tmp, "model.weights.h5")


# -- reading ----------------------------------------------------------------------------
def _check_names(infos, display):
    seen = set()
    for info in infos:
        n = info.filename
        bad = (n.startswith(("/", "\\")) or "\\" in n or "\x00" in n or ":" in n
               or any(part in ("..", ".") for part in n.split("/")))
        if bad:
            raise SavingError(display, f"the archive has a member with an unsafe name {n!r} "
                                       "(absolute, or leaving the archive's folder)")
        if n in seen:
            raise SavingError(display, f"the archive has two members named {n!r}")
        seen.add(n)
    extra = sorted(seen - set(MEMBERS))
    missing = [m for m in MEMBERS if m not in seen]
    if missing:
        raise SavingError(display, f"the archive lacks {missing} (a .keras file holds "
                                   f"{list(MEMBERS)})")
    if extra:
        raise SavingError(display, f"the archive has unexpected members {extra[:6]} (a .keras "
                                   f"file holds only {list(MEMBERS)})")


def _read_member(zf, info, display, limit=None):
    if limit is not None and info.file_size > limit:
        raise SavingError(display, f"'{info.filename}' is {info.file_size} bytes, over the "
                                   f"{limit}-byte limit for it")
    if info.file_size > (1 << 20) and info.file_size > BOMB_RATIO * max(info.compress_size, 1):
        raise SavingError(display, f"'{info.filename}' declares {info.file_size} bytes but stores "
                                   f"{info.compress_size}: refusing a possible decompression bomb")
    with h5files.reading(display, f"read '{info.filename}' from the archive"):
        data = zf.read(info)  # checks the CRC-32
    if len(data) != info.file_size:
        raise SavingError(display, f"'{info.filename}' has {len(data)} bytes, the archive says "
                                   f"{info.file_size}")
    return data


def _json(data, display, name):
    try:
        obj = json.loads(data.decode("utf8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise SavingError(display, f"'{name}' is not valid JSON ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise SavingError(display, f"'{name}' should hold a JSON object, found {type(obj).__name__}")
    return obj


def read(path, display):
    """(metadata, config, weights bytes) of a checked archive."""
    with h5files.reading(display, "open the .keras archive"):
        with open(path, "rb") as fh:
            head = fh.read(4)
        size = os.path.getsize(path)
    if head != h5files.ZIP_MAGIC:
        raise SavingError(display, "not a .keras archive (no zip signature)")
    with h5files.reading(display, "read the .keras archive"):
        zf = zipfile.ZipFile(path)
    with zf:
        with h5files.reading(display, "read the .keras archive's directory"):
            infos = zf.infolist()
        _check_names(infos, display)
        by_name = {i.filename: i for i in infos}
        metadata = _json(_read_member(zf, by_name["metadata.json"], display, MAX_JSON_BYTES),
                         display, "metadata.json")
        config = _json(_read_member(zf, by_name["config.json"], display, MAX_JSON_BYTES),
                       display, "config.json")
        weights = _read_member(zf, by_name["model.weights.h5"], display, size)
    return metadata, config, weights
