"""Predict: a trained model on your own images (or a random test image): the 32 x 32 input it actually
sees, its top-k classes, and the attention weights each dynamic-convolution block gave the image."""

from __future__ import annotations

import logging
import random

import streamlit as st
import torch
from PIL import Image

from ui.charts.explore import attention_chart, top_k_chart
from cifar_app.data.formats import data_status
from ui.png import to_png_bytes
from cifar_app.analysis.predict import (
    ACCEPTED_NAMES, FITS, MAX_PIXELS, PreparedImage, UploadError, display_image, predict_images, prepare_upload,
)
from ui.common import data_dir
from ui.model_picker import device, get_data, pick_model

log = logging.getLogger(__name__)
TEST_IMAGE = "test"  # the format of a random test image, which was never uploaded
FIT_HELP = {"crop": "the centre square", "pad": "the whole image, black bars", "squash": "the whole image, stretched"}


@st.cache_data(show_spinner=False, max_entries=64)
def prepare(data: bytes, name: str, fit: str) -> PreparedImage | str:
    """The prepared image, or the message for this file alone (cached: reruns do not decode again)."""
    try:
        return prepare_upload(data, name, fit)
    except UploadError as error:
        return str(error)
    except Exception as error:  # a decoder bug must cost one file, never the page
        log.exception("unexpected failure reading %s", name)
        return f"{name} could not be read ({type(error).__name__}: {error})."


def with_article(noun: str) -> str:
    """'an airplane', 'a cat'."""
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def card(name: str, item: PreparedImage, true: str | None, top, weights) -> None:
    """One image's answer: the image, what the model sees, the top classes and each block's attention."""
    answer = top.iloc[0]
    verdict = ""
    if true is not None:
        verdict = " ✓ correct" if answer["class"] == true else f" ✗ (it is {with_article(true)})"
    st.markdown(f"**{name}** → **{answer['class']}** ({answer['probability']:.1%}){verdict}")
    original_col, seen_col, top_col, attention_col = st.columns([3, 2, 5, 4])
    what = "test image" if item.format == TEST_IMAGE else "as uploaded"
    original_col.image(item.display, caption=f"{what}, {item.size[0]} x {item.size[1]}", width=item.display.width)
    seen_col.image(to_png_bytes(item.image, scale=4), caption="what the model sees (32 x 32)", width=128)
    if item.notes:
        original_col.caption("; ".join(item.notes))
    top_col.altair_chart(top_k_chart(top), width="stretch")
    attention_col.altair_chart(attention_chart(weights), width="stretch")
    attention_col.caption("Attention a per block: how each block mixed its K kernels for this image.")


st.title("Predict")
choice = pick_model("predict")
if choice is None:
    st.stop()
st.caption(f"{choice.loaded.source}: {choice.loaded.config.blocks} blocks, K = {choice.loaded.config.k}.")

upload_col, options_col = st.columns([3, 1])
# No type= filter: the browser would only turn a file of another kind (an SVG) red, its reason on hover; read here,
# it gets a sentence on the page like any file that is not an image.
files = upload_col.file_uploader(
    f"Images ({ACCEPTED_NAMES})", accept_multiple_files=True,
    key="predict_files", help="Each file is read on its own: one bad file gets a message, the rest a prediction.",
)
upload_col.caption(f"{ACCEPTED_NAMES} images, each up to {st.get_option('server.maxUploadSize')} MB and "
                   f"{MAX_PIXELS / 1e6:.0f} megapixels. A larger file is refused by the browser before it is sent: "
                   "its chip turns red.")
fit = options_col.radio("Make it square by", FITS, key="predict_fit", format_func=lambda f: f"{f}: {FIT_HELP[f]}")
k = options_col.slider("Top classes", 1, len(choice.loaded.classes), 5, key="predict_k")

found, _ = data_status(data_dir())
if found is not None and upload_col.button("Try a random test image", key="predict_random"):
    st.session_state["predict_random_index"] = random.randrange(10_000)

items: list[tuple[str, PreparedImage | str, str | None]] = []
if found is not None and "predict_random_index" in st.session_state:
    data = get_data()
    if data is not None:
        index = st.session_state["predict_random_index"] % len(data.test_labels)
        image = data.test_images[index]
        shown = display_image(Image.fromarray(image.permute(1, 2, 0).numpy()))
        true = data.classes[int(data.test_labels[index])]
        name = f"test image #{index}"
        items.append((name, PreparedImage(name, shown, image, (32, 32), TEST_IMAGE), true))
for file in files or []:
    items.append((file.name, prepare(file.getvalue(), file.name, fit), None))

if not items:
    st.info("Upload one or more images, or try a random test image.")
    st.stop()

ready = [(name, item, true) for name, item, true in items if isinstance(item, PreparedImage)]
result = None
if ready:
    result = predict_images(choice.loaded.model, torch.stack([item.image for _, item, _ in ready]), device(),
                            choice.loaded.classes, tta_flip=choice.loaded.config.tta_flip)
row = 0
for name, item, true in items:
    if isinstance(item, str):
        st.error(item, icon=":material/block:")
        continue
    with st.container(border=True):
        try:
            card(name, item, true, result.top(row, k), result.attention_frame(row))
        except Exception as error:  # one card's failure costs that card, never the cards after it
            log.exception("the card of %s failed", name)
            st.error(f"{name} could not be shown ({type(error).__name__}: {error}).", icon=":material/block:")
    row += 1
