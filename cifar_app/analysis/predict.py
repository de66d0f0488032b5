"""Turning an uploaded file into what the model sees, and the model's answer for it.

`prepare_upload` is the one door for user images. It trusts nothing about the file: the name and the
browser's MIME type are ignored, only the accepted decoders may open it (`ACCEPTED_FORMATS`), the pixel
count is checked from the header before anything is decoded (and Pillow's DecompressionBombWarning is an
error), the decode itself runs inside the try, and every failure becomes an `UploadError` whose message
names the file and the problem. Whatever decodes is made into a 32x32 RGB uint8 image the way a person
expects: the EXIF orientation applied, the first frame of an animation, 16-bit samples scaled (not
clipped), transparency over white, and only then RGB.

`predict` runs a model over a split (the Evaluate page's `Predictions`); `predict_images` runs it on such images and returns the class probabilities (with the run's flip
test-time augmentation, as its evaluation) together with each block's mixing weights a (B, K): the
dynamic-convolution network's own view of an image.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageOps

from torch import nn

from cifar_app.analysis.metrics import Predictions
from cifar_app.data.formats import CLASSES
from cifar_app.data.loader import normalize
from cifar_app.engine.evaluation import flip_averaged, predict_logits
from cifar_app.model.network import DynamicConvNet

# Pillow's decoder names. (A phone's MPO file, a JPEG with extra preview frames, opens through JPEG.)
ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF")
ACCEPTED_NAMES = "PNG, JPEG, WebP, BMP or GIF"
# 40 megapixels holds any phone photo; past it a small compressed file can still expand to gigabytes.
MAX_PIXELS = 40_000_000
SIDE = 32
FITS = ("crop", "pad", "squash")
# Large JPEGs decode at a reduced DCT scale no smaller than this: faster, and far less memory.
DRAFT_SIZE = (512, 512)
# The page shows each upload with its longer side this many pixels; a strip thinner than MIN_DISPLAY_SIDE at
# that scale (a 4000 x 10 banner would be under one pixel) is widened to it so that it can be seen at all.
DISPLAY_SIDE = 160
MIN_DISPLAY_SIDE = 8
ORIENTATION_TAG = 0x0112


class UploadError(ValueError):
    """One uploaded file cannot be used; the message says which and why."""


@dataclass
class PreparedImage:
    """An upload made ready for the model."""

    name: str
    display: Image.Image  # orientation applied, sized to be shown as it is (display_image)
    image: torch.Tensor  # (3, 32, 32) uint8: exactly what the model gets
    size: tuple[int, int]  # width, height of the file as stored
    format: str
    notes: list[str] = field(default_factory=list)  # what was done to it, in words


def _to_8bit(img: Image.Image) -> Image.Image:
    """16- and 32-bit integer samples scaled to 0..255 (Pillow's convert would clip them to white)."""
    pixels = np.asarray(img)
    top = 65535 if img.mode.startswith("I;16") or pixels.max(initial=0) > 255 else 255
    return Image.fromarray((pixels.astype(np.float64) * 255 / top).round().clip(0, 255).astype(np.uint8), "L")


def _to_rgb(img: Image.Image, notes: list[str]) -> Image.Image:
    if img.mode.startswith("I") or img.mode == "F":
        notes.append(f"{'16' if img.mode.startswith('I;16') else '32'}-bit samples scaled to 8 bits")
        img = _to_8bit(img)
    if img.mode == "P" and "transparency" in img.info or img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        notes.append("transparent parts shown over white")
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode != "RGB":
        notes.append(f"converted from {img.mode} to RGB")
        img = img.convert("RGB")
    return img


def _scaled(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    # BOX averages every source pixel (antialiased), like shrinking a photo should
    return img.resize(size, Image.BOX if img.width >= size[0] and img.height >= size[1] else Image.BICUBIC)


def to_square(img: Image.Image, fit: str = "crop", side: int = SIDE) -> Image.Image:
    """`side` x `side`: the centre square (crop), the whole image on a black square (pad), or stretched.

    pad scales the image into the square before adding the bars (a 40000 x 1 strip padded first would be a
    40000 x 40000 canvas), and keeps at least one row or column of it, so a thin strip stays visible.
    """
    if fit not in FITS:
        raise ValueError(f"unknown fit {fit!r}; use one of {', '.join(FITS)}")
    w, h = img.size
    if fit == "crop" and w != h:
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        img = img.crop((left, top, left + s, top + s))
    elif fit == "pad" and w != h:
        s = max(w, h)
        inner = (max(1, round(w * side / s)), max(1, round(h * side / s)))
        square = Image.new("RGB", (side, side))
        square.paste(_scaled(img, inner), ((side - inner[0]) // 2, (side - inner[1]) // 2))
        return square
    return _scaled(img, (side, side))


def display_image(img: Image.Image, side: int = DISPLAY_SIDE, min_side: int = MIN_DISPLAY_SIDE) -> Image.Image:
    """The image as the page shows it, whatever its shape (1 x N included): the longer side `side` pixels
    (enlarged pixel by pixel when smaller, averaged when larger), the shorter in proportion but at least
    `min_side`. A portrait image is centred on a clear canvas `side` wide, so every image shown is as wide
    as the others and its caption has room (under an 8-pixel-wide strip it would wrap letter by letter)."""
    w, h = img.size
    scale = side / max(w, h)
    size = (max(min_side, round(w * scale)), max(min_side, round(h * scale)))
    shown = img.resize(size, Image.NEAREST if scale >= 1 else Image.BOX)
    if size[0] >= side:
        return shown
    canvas = Image.new("RGBA", (side, size[1]), (0, 0, 0, 0))
    canvas.paste(shown, ((side - size[0]) // 2, 0))
    return canvas


def prepare_upload(
    data: bytes, name: str = "the file", fit: str = "crop", max_pixels: int = MAX_PIXELS,
) -> PreparedImage:
    """The file's first frame as the model's 32x32 RGB input; UploadError for anything unusable."""
    if not data:
        raise UploadError(f"{name} is empty.")
    notes: list[str] = []
    try:
        # catch_warnings is process-wide, so two sessions decoding at once may see each other's filter; the
        # explicit pixel check below is what makes the cap hold in every thread.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=list(ACCEPTED_FORMATS))
            size, fmt = img.size, img.format or "?"
            # the header is read; refuse before decoding a single pixel
            if size[0] * size[1] > max_pixels:
                raise UploadError(
                    f"{name} is {size[0]} x {size[1]} pixels ({size[0] * size[1] / 1e6:.0f} megapixels); images up "
                    f"to {max_pixels / 1e6:.0f} megapixels are accepted. Shrink it and upload it again."
                )
            if getattr(img, "n_frames", 1) > 1:
                img.seek(0)
                notes.append(f"first of {img.n_frames} frames")
            if fmt in ("JPEG", "MPO") and (size[0] > DRAFT_SIZE[0] * 2 or size[1] > DRAFT_SIZE[1] * 2):
                img.draft(None, DRAFT_SIZE)
            img.load()
            orientation = img.getexif().get(ORIENTATION_TAG, 1)
            if orientation not in (None, 1):
                notes.append(f"turned upright (EXIF orientation {orientation})")
            rgb = _to_rgb(ImageOps.exif_transpose(img), notes)
    except UploadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise UploadError(f"{name} declares far too many pixels to decode safely ({error}).") from error
    except Image.UnidentifiedImageError as error:
        raise UploadError(f"{name} is not a {ACCEPTED_NAMES} image (or it is damaged beyond reading).") from error
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as error:
        # truncated data, broken chunks, impossible headers: Pillow raises all of these
        raise UploadError(f"{name} could not be decoded: {str(error) or type(error).__name__}.") from error
    square = to_square(rgb, fit)
    tensor = torch.from_numpy(np.asarray(square, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()
    return PreparedImage(name, display_image(rgb), tensor, size, fmt, notes)


@dataclass
class ImagePredictions:
    """The model's answer for a batch of images."""

    probs: np.ndarray  # (B, C)
    attention: list[np.ndarray]  # one (B, K) array per block
    classes: tuple[str, ...] = CLASSES

    def top(self, i: int, k: int = 5) -> pd.DataFrame:
        """Image i's k most probable classes: class, probability (most probable first)."""
        order = np.argsort(-self.probs[i], kind="stable")[:k]
        return pd.DataFrame({"class": [self.classes[j] for j in order], "probability": self.probs[i][order]})

    def attention_frame(self, i: int) -> pd.DataFrame:
        """Image i's mixing weights in long form: block (1-based), kernel (1-based), weight."""
        rows = [
            {"block": b + 1, "kernel": k + 1, "weight": float(a[i, k])}
            for b, a in enumerate(self.attention) for k in range(a.shape[1])
        ]
        return pd.DataFrame(rows, columns=["block", "kernel", "weight"])


@torch.no_grad()
def predict_images(
    model: DynamicConvNet, images: torch.Tensor, device: torch.device | str = "cpu",
    classes: tuple[str, ...] = CLASSES, tta_flip: bool = False,
) -> ImagePredictions:
    """Probabilities and per-block attention for uint8 (B, 3, 32, 32) images, in eval mode.

    With `tta_flip` (pass the run's config.tta_flip) the probabilities are those its evaluation computes, the
    softmax of the mean logits of each image and its mirror image, so an image gets the same answer here as on
    the Evaluate page; the attention stays the image's own.
    """
    was_training = model.training
    model.eval()
    try:
        x = normalize(images.to(device))
        logits, attention = model.forward_with_attention(x)
        logits = logits.float()
        if tta_flip:
            logits = flip_averaged(model, x, logits)
    finally:
        model.train(was_training)
    probs = torch.softmax(logits, dim=1).cpu().numpy()
    return ImagePredictions(probs, [a.float().cpu().numpy() for a in attention], tuple(classes))


def predict(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    device: torch.device,
    classes: tuple[str, ...] = CLASSES,
    batch_size: int = 1000,
    bf16: bool = False,
    tta_flip: bool = False,
) -> Predictions:
    """Softmax probabilities of `model` for uint8 `images`, kept on the host with the labels."""
    logits = predict_logits(model, images, device, batch_size=batch_size, bf16=bf16, tta_flip=tta_flip)
    probs = torch.softmax(logits, dim=1).cpu().numpy().astype(np.float32)
    return Predictions(labels.cpu().numpy().astype(np.int64), probs, tuple(classes))
