"""Shared by the exploration tests: one tiny trained run per test session, and image files made on the spot."""

from __future__ import annotations

import atexit
import functools
import io
import shutil
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from cifar_app.store.runs import RunStore
from cifar_app.engine.loop import train
from conftest import tiny_cifar, tiny_config


@functools.cache
def trained_runs_dir() -> Path:
    """A run store holding one finished tiny run (3 blocks, width 8, evaluated with flip test-time
    augmentation, as the best preset is), trained once per process."""
    root = Path(tempfile.mkdtemp(prefix="cifar-explore-runs-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    result = train(tiny_config(epochs=3, name="tiny", tta_flip=True), data=tiny_cifar(), store=RunStore(root))
    assert result.status == "finished", result.reason
    return root


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height but whose data is a few bytes: a decompression bomb's shape."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def striped(width: int = 48, height: int = 48) -> Image.Image:
    """An RGB test card: left half red, right half blue."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:, : width // 2] = (255, 0, 0)
    pixels[:, width // 2 :] = (0, 0, 255)
    return Image.fromarray(pixels)
