"""Samples: a batch of 100 images with their classes (the coursework's Task 1), the class balance of each
split, and the training augmentation applied to one image, exactly as the training loop applies it."""

from __future__ import annotations

import pandas as pd
import streamlit as st
import torch

from ui.charts.explore import class_balance_chart
from cifar_app.data.loader import augment, class_counts, denormalize, sample_batch
from ui.png import to_png_bytes
from ui.model_picker import get_data

BATCH = 100

st.title("Samples")
data = get_data()
if data is None:
    st.stop()
classes = list(data.classes)
st.caption(f"CIFAR-10 from the {data.source}: {len(data.train_labels):,} training and "
           f"{len(data.test_labels):,} test images, 32 x 32 pixels.")

st.session_state.setdefault("samples_seed", 0)
split_col, class_col, button_col = st.columns([1, 3, 1], vertical_alignment="bottom")
split = split_col.radio("Split", ["train", "test"], horizontal=True, key="samples_split")
chosen = class_col.multiselect("Only these classes", classes, key="samples_classes",
                               placeholder="all classes", help="Leave empty to draw from every class.")
if button_col.button("New batch", key="samples_new", help="Draw another 100 images", width="stretch"):
    st.session_state["samples_seed"] += 1

images, labels, indices = sample_batch(
    data, split, BATCH, seed=st.session_state["samples_seed"], classes=[classes.index(c) for c in chosen]
)
names = [classes[i] for i in labels.tolist()]
st.image([to_png_bytes(image, scale=2) for image in images],
         caption=[f"{n + 1} · {name}" for n, name in enumerate(names)], width=76)

st.subheader("One image, bigger")
if st.session_state.get("samples_pick", 1) > len(images):
    st.session_state["samples_pick"] = 1
pick_col, view_col = st.columns([1, 3])
pick = pick_col.number_input("Image number in the batch", 1, max(1, len(images)), key="samples_pick")
image, label, index = images[pick - 1], names[pick - 1], int(indices[pick - 1])
view_col.image(to_png_bytes(image, scale=8), caption=f"{label} · {split} image #{index}", width=256)

st.subheader("Class balance")
counts = pd.DataFrame([
    {"split": name, "class": classes[i], "count": n}
    for name in ("train", "test") for i, n in enumerate(class_counts(data.split(name)[1]))
])
st.altair_chart(class_balance_chart(counts, classes), width="stretch")

st.subheader("Augmentation preview")
st.caption("The image above and random versions of it from the training augmentation itself "
           "(`cifar_app.data.augment`): what a training batch would hold. Cutout masks a square with "
           "the dataset's mean colour, which is zero after normalisation.")
st.session_state.setdefault("samples_aug_seed", 0)
crop_col, cut_col, n_col, again_col = st.columns([1, 1, 1, 1], vertical_alignment="bottom")
crop_flip = crop_col.checkbox("Random crop + flip", value=True, key="samples_crop",
                              help="Crop 32 x 32 from the image padded by 4 black pixels; mirror half the time.")
cutout = cut_col.slider("Cutout size", 0, 16, 0, step=2, key="samples_cutout",
                        help="Side of the square masked at a random place (0 = off).")
versions = n_col.slider("Versions", 4, 16, 8, step=4, key="samples_versions")
if again_col.button("Draw again", key="samples_again", width="stretch"):
    st.session_state["samples_aug_seed"] += 1
generator = torch.Generator().manual_seed(st.session_state["samples_aug_seed"])
augmented = denormalize(augment(image.unsqueeze(0).repeat(versions, 1, 1, 1), generator, crop_flip, cutout))
st.image([to_png_bytes(image, scale=3)] + [to_png_bytes(x, scale=3) for x in augmented],
         caption=["original"] + [f"version {n + 1}" for n in range(versions)], width=96)
