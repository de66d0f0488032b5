"""One view of an image, everywhere: the galleries of the Dynamics and Evaluate pages put a button under each
image, and the button opens the same dialog: the image large with its label, the model's top classes, the
attention each dynamic-convolution block gave it, and its true-class probability at each recorded epoch when
the run kept a per-image record (cifar_app.analysis.dynamics).

A click stores which image, and which gallery it came from, in the session; that gallery opens the dialog
when it is drawn again (a page may show several galleries, and only one dialog may be open).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import streamlit as st

from ui.charts.explore import attention_chart, top_k_chart
from cifar_app.store.checkpoints import CheckpointError, LoadedModel, load_run_model
from cifar_app.data.dataset import Cifar10
from ui.png import to_png_bytes
from cifar_app.device import pick_device
from cifar_app.analysis.dynamics import Records, load_records, trajectory
from cifar_app.store.records import records_signature
from ui.charts.dynamics import trajectory_chart
from ui.png import tile_png
from cifar_app.analysis.predict import predict_images
from cifar_app.engine.folds import labels_spec
from cifar_app.store.lineage import other_data
from cifar_app.store.runs import Run
from cifar_app.data.labels import EXCLUDED, LabelSetError, LabelStore

# A caption is a button's label, which Streamlit cuts to one line ("#6559 · p=…"): let it wrap under its image.
_LABEL = "[data-testid='stColumn'] [data-testid='stBaseButton-tertiary']"
WRAP_CAPTIONS = (f"<style>{_LABEL} .stMarkdownEllipsis, {_LABEL} p {{white-space: normal !important; "
                 "overflow: visible !important; text-overflow: clip !important;}</style>")
PENDING = "image_view_pending"  # session key: (gallery key, ImageRef) of the image asked for


@dataclass(frozen=True)
class ImageRef:
    split: str  # "train" or "test"
    index: int  # the image's index in CIFAR-10's split


@dataclass
class ViewSource:
    """What the view shows an image with: the dataset, a model (None: no top-k or attention), the run's record
    (None: no probability over epochs), and what the model is, for the caption."""

    data: Cifar10
    model: LoadedModel | None
    records: Records | None = None
    model_label: str = ""
    records_problem: str = ""  # why the run's record is not shown with this data (it trained on other images)
    label_set: tuple[str, str] | None = None  # (data folder, set name): where this view's label fixes go; None: none


def fix_label(ref: ImageRef, source: ViewSource, label: int, suggested: int | None) -> None:
    """Relabel (the model's answer preselected), exclude or keep one image: a new version of the label set the view
    edits (data/labels.py). A test image's fix is a test-label correction of the set."""
    data_dir, name = source.label_set
    store = LabelStore(data_dir)
    classes = list(source.data.classes)
    cols = st.columns([2, 1, 1, 1])
    new = cols[0].selectbox("Relabel as", classes, index=suggested if suggested is not None else label,
                            key=f"fix_class_{ref.split}_{ref.index}")
    choice = next((kind for kind, col in zip(("relabel", "exclude", "keep"), cols[1:])
                   if col.button(kind.capitalize(), key=f"fix_{kind}_{ref.split}_{ref.index}",
                                 disabled=kind == "exclude" and ref.split == "test")), None)
    if choice is None:
        return
    value = classes.index(new) if choice == "relabel" else EXCLUDED if choice == "exclude" else label
    try:
        label_set = store.editable(name, source.data.train_labels.numpy())
        entry = label_set.edit([(ref.split, ref.index, value)], why=f"{choice} of {ref.split} image {ref.index}",
                               dataset_test=source.data.test_labels.numpy())
    except LabelSetError as error:
        st.error(str(error))
        return
    st.success(f"Saved as {label_set.name}@{entry.version}.", icon=":material/check:")


@st.cache_resource(show_spinner="Loading the model…", max_entries=4)
def _run_model(key: str, run_path: str, which: str) -> LoadedModel:
    return load_run_model(Run(Path(run_path)), which, pick_device("auto"))


def run_model(run: Run) -> LoadedModel | None:
    """A run's best model (else its last), loaded once per checkpoint file; None while it has none."""
    for which in ("best", "last"):
        path = run.checkpoint_path(which)
        try:
            return _run_model(f"{path.resolve()}:{path.stat().st_mtime_ns}", str(run.path), which)
        except (OSError, CheckpointError):
            continue
    return None


@st.cache_resource(show_spinner="Reading the run's record…", max_entries=4)
def _records(path: str, signature: tuple) -> Records | None:
    return load_records(Path(path))


def run_records(run: Run | None) -> Records | None:
    """A run's per-image record, read again only when an epoch's record has been written since (None: no record)."""
    return None if run is None else _records(str(run.path), records_signature(run.path))


def records_for(run: Run | None, data: Cifar10) -> tuple[Records | None, str]:
    """A run's record, only when `data` is the data it trained on (as the Dynamics page checks): else None and why.
    With another copy in the sidebar, image #i of the record is another image than #i on the screen."""
    records = run_records(run)
    if records is None or run is None:
        return records, ""
    source = other_data(run, data.fingerprint)
    if source is None and records.data_mismatch(data.train_labels.numpy(), data.test_labels.numpy(),
                                                label_set=bool(labels_spec(run))) is None:
        return records, ""
    return None, (f"This run trained on other data ({source or 'other labels'}) than the sidebar's copy: its "
                  "per-image record describes other images, so it is not shown here.")


def gallery(refs: Sequence[ImageRef], captions: Sequence[str], source: ViewSource, key: str,
            tiles: Sequence[bytes] | None = None, columns: int = 8) -> None:
    """Images in a grid, each with its caption as a button that opens the image's view. `tiles`: the PNGs to
    show (e.g. with a sparkline); by default the images themselves, three times their size."""
    if not refs:
        st.caption("No images here.")
        return
    st.html(WRAP_CAPTIONS)
    for start in range(0, len(refs), columns):
        cells = st.columns(columns)
        for offset, cell in enumerate(cells):
            n = start + offset
            if n >= len(refs):
                break
            ref = refs[n]
            picture = tiles[n] if tiles is not None else to_png_bytes(source.data.split(ref.split)[0][ref.index], 3)
            cell.image(picture, width="stretch")
            cell.button(captions[n], key=f"{key}_{ref.split}_{ref.index}_{n}", type="tertiary",
                        on_click=_ask, args=(key, ref), help="Open this image: large, top classes, attention "
                        "per block, and its probability over the epochs")
    pending = st.session_state.get(PENDING)
    if pending is not None and pending[0] == key:
        del st.session_state[PENDING]
        image_view(pending[1], source)


def _ask(key: str, ref: ImageRef) -> None:
    st.session_state[PENDING] = (key, ref)


def tiles_with_sparklines(refs: Sequence[ImageRef], source: ViewSource) -> list[bytes]:
    """Training images with their true-class probability over the recorded epochs drawn beneath them."""
    images = source.data.train_images
    records = source.records
    rows = [records.row_of(ref.index) if records is not None else None for ref in refs]
    return [tile_png(images[ref.index].numpy(), records.p_true[:, row] if row is not None else None)
            for ref, row in zip(refs, rows)]


@st.dialog("Image", width="large")
def image_view(ref: ImageRef, source: ViewSource) -> None:
    """The view of one image (a dialog): large, label, top-k, attention per block, probability over epochs."""
    images, labels = source.data.split(ref.split)
    image, label = images[ref.index], source.data.classes[int(labels[ref.index])]
    row = source.records.row_of(ref.index) if source.records is not None and ref.split == "train" else None
    own = label
    if row is not None:  # the label the run trained on (a label set's, where it trained on one)
        label = source.records.classes[int(source.records.train_labels[row])]
    picture_col, model_col = st.columns([2, 3], gap="large")
    picture_col.image(to_png_bytes(image, scale=8), width=256)
    picture_col.markdown(f"**{ref.split} image #{ref.index}** · labelled **{label}**"
                         + (f" (the dataset's own label: {own})" if own != label else ""))
    suggested = None
    if source.model is None:
        model_col.caption("No model to ask: this run has no checkpoint yet.")
    else:
        result = predict_images(source.model.model, image[None], pick_device("auto"), source.model.classes,
                                tta_flip=source.model.config.tta_flip)  # the answer Evaluate gives
        top = result.top(0, 5)
        suggested = source.data.classes.index(top.iloc[0]["class"])
        verdict = "right" if top.iloc[0]["class"] == label else f"wrong: labelled {label}"
        model_col.markdown(f"The model says **{top.iloc[0]['class']}** ({top.iloc[0]['probability']:.0%}, "
                           f"{verdict})")
        model_col.altair_chart(top_k_chart(top), width="stretch")
        model_col.caption(source.model_label or source.model.source)
        picture_col.altair_chart(attention_chart(result.attention_frame(0)), width="stretch")
        picture_col.caption("Attention per block: how each block mixed its K kernels for this image.")
    if source.label_set is not None:
        with picture_col:
            fix_label(ref, source, source.data.classes.index(label), suggested)
    if source.records is None:
        model_col.caption(source.records_problem or
                          "This run kept no per-image record, so there is no probability over epochs to show.")
        return
    path = trajectory(source.records, ref.split, ref.index)
    if path.empty:
        where = "a validation image, not trained on" if ref.split == "train" else "not tested yet"
        model_col.caption(f"Not in this run's record ({where}).")
        return
    model_col.markdown(f"**Its {label} probability at each epoch** "
                       f"({'training passes, augmented' if ref.split == 'train' else 'test passes'})")
    model_col.altair_chart(trajectory_chart(path), width="stretch")
    model_col.caption(f"{most_predicted(path['predicted'].tolist())}; right at {int(np.sum(path['correct']))} of "
                      f"{len(path)} epoch{'s' if len(path) != 1 else ''}.")


def most_predicted(predicted: list[str]) -> str:
    """'Predicted most often: frog (3 of 4 epochs)', or on a tie 'Predicted as often as each other: deer and frog
    (2 of 4 epochs each; deer in the later ones)', as the Dynamics gallery breaks ties (the later epochs)."""
    counts = {name: predicted.count(name) for name in dict.fromkeys(predicted)}
    top = max(counts.values())
    tied = [name for name, count in counts.items() if count == top]
    of = f"{top} of {len(predicted)} epoch{'s' if len(predicted) != 1 else ''}"
    if len(tied) == 1:
        return f"Predicted most often: {tied[0]} ({of})"
    later = max(tied, key=lambda name: sum(i for i, p in enumerate(predicted) if p == name))
    return f"Predicted as often as each other: {' and '.join(tied)} ({of} each; {later} in the later ones)"
