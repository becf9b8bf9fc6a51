"""TensorBoard summaries the TensorBoard callback builds itself, as protobufs of
tensorboardX (TensorBoard's own schema): the Keras model JSON for the Keras graph view,
and weight images encoded as PNG here (tensorboardX would need Pillow for that).

Also the one import of tensorboardX: its writer module imports PyTorch when it is
installed (seconds, and hundreds of MB) only to accept torch tensors; kgraph hands it
numpy arrays, so PyTorch is kept out of that import."""
from __future__ import annotations

import struct
import sys
import zlib

import numpy as np


def tensorboardx():
    if "tensorboardX" in sys.modules or "torch" in sys.modules:
        import tensorboardX
        return tensorboardX
    sys.modules["torch"] = None  # `import torch` inside raises ImportError, which tensorboardX handles
    try:
        import tensorboardX
    except ImportError as e:  # pragma: no cover - a dependency of kgraph
        raise ImportError("The TensorBoard callback writes event files with the `tensorboardX` package: "
                          "`pip install tensorboardX`.") from e
    finally:
        if sys.modules.get("torch", 0) is None:
            del sys.modules["torch"]
    return tensorboardX


def keras_model_summary(model):
    """What TensorFlow's keras_model_summary writes: the model JSON as a string tensor
    tagged 'keras', for the graph_keras_model plugin."""
    tensorboardx()
    from tensorboardX.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboardX.proto.tensor_pb2 import TensorProto
    from tensorboardX.proto.types_pb2 import DT_STRING
    meta = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="graph_keras_model", content=b"1"))
    tensor = TensorProto(dtype=DT_STRING, string_val=[model.to_json().encode()])
    return Summary(value=[Summary.Value(tag="keras", metadata=meta, tensor=tensor)])


def weight_images(w):
    """Keras's layout of a weight as an image batch (N, H, W, 1), or None when it has none."""
    w = np.squeeze(np.asarray(w, np.float32))
    if w.ndim == 1:
        w = w.reshape(1, w.shape[0], 1, 1)
    elif w.ndim == 2:
        if w.shape[0] > w.shape[1]:
            w = w.T
        w = w.reshape(1, w.shape[0], w.shape[1], 1)
    elif w.ndim == 3:
        w = np.transpose(w, (2, 0, 1))  # channels_last kernels: one image per channel
        w = w.reshape(w.shape[0], w.shape[1], w.shape[2], 1)
    return w if w.ndim == 4 and w.shape[-1] in (1, 3, 4) else None


def png(pixels: np.ndarray) -> bytes:
    """An 8-bit PNG of an (H, W, C) uint8 array, C in 1 (grey), 3 (RGB), 4 (RGBA)."""
    h, w, c = pixels.shape
    rows = b"".join(b"\x00" + pixels[y].tobytes() for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, {1: 0, 3: 2, 4: 6}[c], 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def image_summary(tag, images, max_outputs=3):
    """Float images in [0, 1] (clipped, as tf.summary.image converts them), at most
    `max_outputs` of them: `tag` for one image, `tag/i` for several."""
    tensorboardx()
    from tensorboardX.proto.summary_pb2 import Summary
    pixels = (np.clip(images[:max_outputs], 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    values = []
    for i, img in enumerate(pixels):
        proto = Summary.Image(height=img.shape[0], width=img.shape[1], colorspace=img.shape[2],
                              encoded_image_string=png(img))
        values.append(Summary.Value(tag=tag if len(pixels) == 1 else f"{tag}/{i}", image=proto))
    return Summary(value=values)
