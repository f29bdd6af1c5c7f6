"""A feature shard's sample, decoded: the clip features (`features.npy`) and the video's `json`, read
without copying the array or parsing a `.npy` header seen before, and checked against the set's feature
dimension and dtype (a sample that differs raises, naming it, so the stream can count it as skipped)."""
from __future__ import annotations

import functools
import io
import json

import numpy as np


@functools.lru_cache(maxsize=256)
def _npy_header(prefix: bytes) -> tuple[tuple, bool, np.dtype]:
    """(shape, fortran order, dtype) from a .npy file's magic + header, parsed once per distinct header."""
    fp = io.BytesIO(prefix)
    version = np.lib.format.read_magic(fp)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    return read(fp, max_header_size=1 << 16)


def read_npy(buf: bytes) -> np.ndarray:
    """`np.load` of a .npy held in memory, without copying the data or re-parsing a header seen before."""
    if buf[:6] != b"\x93NUMPY" or len(buf) < 12:
        raise ValueError("not a .npy file (bad magic string)")
    size = 2 if buf[6] == 1 else 4  # the header length is a uint16 in format 1.0, a uint32 from 2.0
    end = 8 + size + int.from_bytes(buf[8:8 + size], "little")
    shape, fortran, dtype = _npy_header(bytes(buf[:end]))
    if dtype.hasobject:
        raise ValueError("object arrays are not allowed")
    count = int(np.prod(shape))
    if len(buf) - end < count * dtype.itemsize:
        raise ValueError(f"truncated: {len(buf) - end} bytes of data for shape {shape} {dtype}")
    return np.frombuffer(buf, dtype, count, end).reshape(shape, order="F" if fortran else "C")


def decode_video(sample: dict, dim: int | None = None, dtype: str | None = None) -> dict:
    """Raw tar members -> {"__key__", "features" (T, D) float32, "json"}; raises naming the sample. `dim`,
    `dtype`: the set's feature dimension and stored dtype (a sample that differs is rejected)."""
    where = f"{sample.get('__url__', '?')}:{sample.get('__key__', '?')}"
    for key in ("features.npy", "json"):
        if key not in sample:
            raise KeyError(f"{where}: no '{key}' member (is this a feature shard?)")
    try:
        features = read_npy(sample["features.npy"])
    except ValueError as err:
        raise ValueError(f"{where}: features.npy cannot be read ({err})") from None
    if dtype is not None and features.dtype != np.dtype(dtype):
        raise ValueError(f"{where}: features stored as {features.dtype}, the set's are {np.dtype(dtype)}")
    features = features.astype(np.float32)
    meta = json.loads(sample["json"])
    if features.ndim != 2 or len(features) != len(meta.get("clips", [])):
        raise ValueError(f"{where}: features {features.shape} do not match {len(meta.get('clips', []))} clips")
    if dim is not None and features.shape[1] != dim:
        raise ValueError(f"{where}: feature dimension {features.shape[1]}, the visual vocabulary expects {dim}")
    return {"__key__": sample["__key__"], "__url__": sample.get("__url__", "?"), "features": features, "json": meta}
