"""Uploads into model inputs: every bad or unusual file the Predict page can be handed, made here."""

import numpy as np
import pytest
import torch
from PIL import Image

from cifar_app.analysis import predict as predicting
from cifar_app.store.checkpoints import load_run_model
from cifar_app.analysis.predict import (
    DISPLAY_SIDE, MAX_PIXELS, MIN_DISPLAY_SIDE, UploadError, display_image, predict_images, prepare_upload, to_square,
)
from cifar_app.store.runs import RunStore
from conftest import tiny_cifar
from explore_helpers import encode, png_header_only, striped, trained_runs_dir


def noise() -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8))


def pixels(prepared) -> np.ndarray:
    """(32, 32, 3) uint8 of what the model gets."""
    assert prepared.image.shape == (3, 32, 32) and prepared.image.dtype == torch.uint8
    return prepared.image.permute(1, 2, 0).numpy()


def test_a_plain_png_becomes_the_model_input():
    prepared = prepare_upload(encode(striped(64, 64), "PNG"), "card.png")
    seen = pixels(prepared)
    assert prepared.format == "PNG" and prepared.size == (64, 64) and prepared.notes == []
    assert tuple(seen[16, 2]) == (255, 0, 0) and tuple(seen[16, 29]) == (0, 0, 255)


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP", "BMP", "GIF"])
def test_every_accepted_format_decodes(fmt):
    prepared = prepare_upload(encode(striped(), fmt), f"card.{fmt.lower()}")
    assert prepared.format == fmt
    seen = pixels(prepared).astype(int)
    assert seen[16, 2, 0] > 200 and seen[16, 2, 2] < 60  # red on the left
    assert seen[16, 29, 2] > 200 and seen[16, 29, 0] < 60  # blue on the right


def test_the_file_name_is_not_trusted():
    assert prepare_upload(encode(striped(), "JPEG"), "really-a-jpeg.png").format == "JPEG"


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "is empty"),
        (b"hello, this is text and not an image\n" * 10, "is not a PNG, JPEG, WebP, BMP or GIF image"),
        (encode(Image.new("L", (8, 8)), "TIFF"), "is not a PNG"),  # a real image, but not a decoder we open
        (encode(noise(), "PNG")[:3000], "could not be decoded"),  # truncated (the whole file is ~7 kB)
        (encode(noise(), "JPEG")[:1000], "could not be decoded"),
    ],
    ids=["empty", "text", "tiff", "truncated-png", "truncated-jpeg"],
)
def test_unusable_files_get_a_message_naming_the_file(data, message):
    with pytest.raises(UploadError, match=message) as caught:
        prepare_upload(data, "upload.bin")
    assert "upload.bin" in str(caught.value)


@pytest.mark.parametrize(
    "width, height",
    [(8000, 6000), (10_000, 10_000), (50_000, 50_000)],
    ids=["over-our-cap", "pillow-warning", "pillow-error"],
)
def test_decompression_bombs_are_refused_from_the_header(width, height):
    data = png_header_only(width, height)
    assert len(data) < 200  # nothing to decode: the header alone must stop it
    with pytest.raises(UploadError, match="pixels") as caught:
        prepare_upload(data, "bomb.png")
    assert "bomb.png" in str(caught.value)


def test_the_pixel_cap_is_a_parameter():
    data = encode(Image.new("RGB", (100, 100)), "PNG")
    assert prepare_upload(data, max_pixels=10_000).size == (100, 100)
    with pytest.raises(UploadError, match="100 x 100"):
        prepare_upload(data, max_pixels=9_999)
    assert MAX_PIXELS >= 12_000_000  # a phone photo fits


def test_grayscale_becomes_three_equal_channels():
    prepared = prepare_upload(encode(Image.new("L", (40, 40), 100), "PNG"))
    assert (pixels(prepared) == 100).all()
    assert "converted from L to RGB" in prepared.notes


def test_rgba_is_shown_over_white():
    image = Image.new("RGBA", (32, 32), (255, 0, 0, 255))
    image.paste((0, 0, 0, 0), (16, 0, 32, 32))  # right half fully transparent (and black underneath)
    seen = pixels(prepare_upload(encode(image, "PNG"), "logo.png"))
    assert tuple(seen[5, 5]) == (255, 0, 0) and tuple(seen[5, 25]) == (255, 255, 255)


def test_palette_images_with_and_without_transparency():
    image = Image.new("P", (32, 32), 0)
    image.putpalette([0, 128, 0, 10, 20, 30])
    image.paste(1, (0, 16, 32, 32))
    assert tuple(pixels(prepare_upload(encode(image, "PNG")))[2, 2]) == (0, 128, 0)
    seen = pixels(prepare_upload(encode(image, "PNG", transparency=1)))
    assert tuple(seen[2, 2]) == (0, 128, 0) and tuple(seen[30, 2]) == (255, 255, 255)


def test_cmyk_jpeg_becomes_rgb():
    prepared = prepare_upload(encode(Image.new("CMYK", (40, 40), (0, 255, 255, 0)), "JPEG"), "print.jpg")
    red = pixels(prepared).astype(int)[16, 16]
    assert red[0] > 230 and red[1] < 30 and red[2] < 30
    assert "converted from CMYK to RGB" in prepared.notes


def test_16_bit_samples_are_scaled_not_clipped():
    ramp = np.zeros((32, 32), dtype=np.uint16)
    ramp[:, 16:] = 32768  # mid grey in 16 bits
    prepared = prepare_upload(encode(Image.fromarray(ramp), "PNG"), "scan.png")
    seen = pixels(prepared)
    assert tuple(seen[4, 4]) == (0, 0, 0) and tuple(seen[4, 28]) == (128, 128, 128)  # clipping would give 255
    assert any("16-bit" in note for note in prepared.notes)


def test_an_animated_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (32, 32), (255, 0, 0)), Image.new("RGB", (32, 32), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    prepared = prepare_upload(data, "anim.gif")
    assert tuple(pixels(prepared)[16, 16]) == (255, 0, 0)
    assert "first of 2 frames" in prepared.notes


def test_exif_orientation_is_applied():
    # stored landscape (red left, blue right) with orientation 6: shown rotated 90 degrees clockwise,
    # so upright the red half is on top
    exif = Image.Exif()
    exif[0x0112] = 6
    prepared = prepare_upload(encode(striped(64, 32), "JPEG", exif=exif, quality=95), "phone.jpg")
    seen = pixels(prepared).astype(int)
    assert prepared.size == (64, 32)
    shown = prepared.display  # upright: 80 x 160, centred on a clear canvas as wide as a landscape image
    assert shown.size == (160, 160) and shown.getpixel((20, 80))[3] == 0
    assert shown.getpixel((80, 10))[0] > 200 and shown.getpixel((80, 150))[2] > 200
    assert seen[2, 16, 0] > 200 and seen[2, 16, 2] < 60  # top: red
    assert seen[29, 16, 2] > 200 and seen[29, 16, 0] < 60  # bottom: blue
    assert any("EXIF" in note for note in prepared.notes)


def test_large_photos_are_shrunk_with_averaging():
    photo = Image.new("RGB", (2000, 1500), (10, 200, 30))
    prepared = prepare_upload(encode(photo, "JPEG", quality=90), "big.jpg")
    assert prepared.display.size == (160, 120)
    assert np.abs(pixels(prepared).astype(int) - (10, 200, 30)).max() < 8


@pytest.mark.parametrize("fit, corner", [("crop", (255, 0, 0)), ("pad", (0, 0, 0)), ("squash", (255, 0, 0))])
def test_the_three_ways_to_make_a_square(fit, corner):
    wide = striped(96, 32)
    square = to_square(wide, fit)
    assert square.size == (32, 32)
    assert square.getpixel((0, 0)) == corner  # pad adds black bars above and below
    with pytest.raises(ValueError, match="unknown fit"):
        to_square(wide, "zoom")


@pytest.mark.parametrize(
    "width, height, shown",
    [(4000, 10, MIN_DISPLAY_SIDE), (10, 4000, MIN_DISPLAY_SIDE), (1, 300, MIN_DISPLAY_SIDE), (300, 1, MIN_DISPLAY_SIDE),
     (1, 1, 160), (2000, 1500, 120), (50, 100, 80)],
)
def test_every_shape_gets_an_image_to_show(width, height, shown):
    """The longer side fills the box, the shorter is in proportion or at least MIN_DISPLAY_SIDE pixels."""
    prepared = prepare_upload(encode(Image.new("RGB", (width, height), (200, 40, 40)), "PNG"), "strip.png")
    image = np.asarray(prepared.display.convert("RGBA"))
    opaque = image[..., 3] > 0
    across, down = opaque.any(axis=0).sum(), opaque.any(axis=1).sum()  # the image's own extent in the box
    assert sorted([across, down]) == sorted([shown, DISPLAY_SIDE]) and (across > down) == (width > height)
    assert prepared.display.width == DISPLAY_SIDE  # every image as wide as the others: its caption has room
    assert (image[opaque][:, :3] == (200, 40, 40)).all()


def test_a_small_image_is_shown_enlarged_pixel_by_pixel():
    checker = Image.fromarray(np.array([[[255, 255, 255], [0, 0, 0]], [[0, 0, 0], [255, 255, 255]]], dtype=np.uint8))
    shown = np.asarray(display_image(checker))
    assert shown.shape == (160, 160, 3)
    assert (shown[:80, :80] == 255).all() and (shown[:80, 80:] == 0).all() and (shown[80:, 80:] == 255).all()


@pytest.mark.parametrize("width, height", [(4000, 1), (1, 40_000), (4000, 10)])
def test_padding_a_thin_strip_keeps_it_visible_between_black_bars(width, height):
    square = np.asarray(to_square(Image.new("RGB", (width, height), (200, 40, 40)), "pad"))
    assert square.shape == (32, 32, 3) and (square[0, 0] == 0).all()
    strip = (square == (200, 40, 40)).all(axis=2)
    assert strip.sum() >= 32 and (strip.all(axis=0).any() or strip.all(axis=1).any())  # a whole row or column


def test_predict_images_returns_probabilities_and_each_blocks_attention():
    run = RunStore(trained_runs_dir()).runs()[0]
    loaded = load_run_model(run, "best")
    images = torch.stack([prepare_upload(encode(striped(), "PNG")).image, torch.zeros(3, 32, 32, dtype=torch.uint8)])
    result = predict_images(loaded.model, images)
    assert result.probs.shape == (2, 10) and np.allclose(result.probs.sum(axis=1), 1, atol=1e-5)
    assert len(result.attention) == loaded.config.blocks == 3
    assert all(a.shape == (2, loaded.config.k) and np.allclose(a.sum(axis=1), 1, atol=1e-5) for a in result.attention)
    top = result.top(0, k=3)
    assert list(top.columns) == ["class", "probability"] and len(top) == 3
    assert top["probability"].is_monotonic_decreasing and top["probability"].iloc[0] == result.probs[0].max()
    frame = result.attention_frame(1)
    assert len(frame) == 3 * 2 and frame["block"].tolist() == [1, 1, 2, 2, 3, 3]


def test_predict_images_gives_a_flip_tta_run_the_probabilities_its_evaluation_gives():
    loaded = load_run_model(RunStore(trained_runs_dir()).runs()[0], "best")
    assert loaded.config.tta_flip
    data = tiny_cifar()
    evaluated = predicting.predict(loaded.model, data.test_images, data.test_labels, torch.device("cpu"),
                                 tta_flip=True).probs
    shown = predict_images(loaded.model, data.test_images, tta_flip=loaded.config.tta_flip)
    assert np.allclose(shown.probs, evaluated, atol=1e-6)
    assert not np.allclose(predict_images(loaded.model, data.test_images).probs, evaluated, atol=1e-3)  # it matters
    mirrored = predict_images(loaded.model, data.test_images.flip(3), tta_flip=True)
    assert np.allclose(mirrored.probs, evaluated, atol=1e-5)  # an image and its mirror get one answer
