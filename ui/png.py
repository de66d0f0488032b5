"""Images as PNG bytes for the pages: a CIFAR image upscaled, and a gallery tile with its sparkline."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image, ImageDraw


def to_png_bytes(image: torch.Tensor, scale: int = 1) -> bytes:
    """One uint8 CHW image as PNG bytes (nearest-neighbour upscaled), for showing."""
    picture = Image.fromarray(image.permute(1, 2, 0).cpu().numpy())
    if scale > 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def tile_png(image: np.ndarray, values: np.ndarray | None = None, scale: int = 3) -> bytes:
    """One uint8 CHW image upscaled `scale` times, with a sparkline of `values` (probabilities over epochs,
    NaN: no value) beneath it: a dashed line at 0.5, the line in blue, the last value as a dot."""
    picture = Image.fromarray(np.ascontiguousarray(np.transpose(image, (1, 2, 0))))
    side = picture.width * scale
    picture = picture.resize((side, side), Image.NEAREST)
    if values is not None:
        strip = 26
        canvas = Image.new("RGB", (side, side + strip), "white")
        canvas.paste(picture, (0, 0))
        draw = ImageDraw.Draw(canvas)
        top, bottom = side + 3, side + strip - 3
        for x in range(0, side, 6):
            draw.line([(x, (top + bottom) / 2), (x + 2, (top + bottom) / 2)], fill="#ced4da")
        known = [(i, float(v)) for i, v in enumerate(values) if np.isfinite(v)]
        step = (side - 6) / max(1, len(values) - 1)
        xy = [(3 + i * step, bottom - v * (bottom - top)) for i, v in known]
        if len(xy) > 1:
            draw.line(xy, fill="#1c7ed6", width=2)
        if xy:
            x, y = xy[-1]
            draw.ellipse([x - 2.5, y - 2.5, x + 2.5, y + 2.5], fill="#1c7ed6")
        picture = canvas
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()
