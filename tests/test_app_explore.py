"""The Samples, Evaluate and Predict pages in Streamlit's AppTest, each opened in the app, with tiny data on disk
and a tiny trained run (or with neither, when they must say how to get them)."""

import pickle

import pytest
import streamlit as st
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest

from cifar_app.analysis import metrics
from cifar_app.analysis.predict import predict
from cifar_app.data.formats import CLASSES
from ui import model_picker
from cifar_app.store.checkpoints import export_bytes, load_run_model
from cifar_app.store.runs import RunStore
from conftest import ROOT, tiny_cifar, write_batches, write_folder
from explore_helpers import encode, png_header_only, striped, trained_runs_dir

TIMEOUT = 60


@pytest.fixture(autouse=True)
def fresh_caches():
    st.cache_resource.clear()
    st.cache_data.clear()
    yield
    st.cache_resource.clear()
    st.cache_data.clear()


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    root = tmp_path / "data"
    write_batches(root)  # 200 training and 100 test images, 10 of each class in the test split
    monkeypatch.setenv("CIFAR_DATA_DIR", str(root))
    return root


@pytest.fixture
def no_data(tmp_path, monkeypatch):
    monkeypatch.setenv("CIFAR_DATA_DIR", str(tmp_path / "nothing-here"))


@pytest.fixture
def runs_dir(monkeypatch):
    root = trained_runs_dir()
    monkeypatch.setenv("CIFAR_RUNS_DIR", str(root))
    return root


@pytest.fixture
def no_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("CIFAR_RUNS_DIR", str(tmp_path / "runs"))


def engine_predictions(run):
    """The test split's probabilities, computed as the run's own evaluation does (with its flip TTA)."""
    loaded = load_run_model(run, "best")
    assert loaded.config.tta_flip
    data = tiny_cifar()
    return predict(loaded.model, data.test_images, data.test_labels, torch.device("cpu"), tta_flip=True)


def app() -> AppTest:
    return AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=TIMEOUT)


def page(name: str) -> AppTest:
    """The app opened on one page, as its link does (the page's URL path is its file name)."""
    at = app().switch_page(f"app_pages/{name}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def text_of(at: AppTest) -> str:
    parts = [e.value for kind in ("markdown", "info", "error", "caption", "warning") for e in getattr(at, kind)]
    return "\n".join(str(p) for p in parts)


def gallery_captions(at: AppTest, gallery: str) -> list[str]:
    """The captions of an image gallery (ui.image_view): the labels of the buttons that open each image."""
    return [b.label for b in at.button if b.key and b.key.startswith(gallery + "_")]


def captions(at: AppTest) -> list[list[str]]:
    return [image.captions for image in at.image]


# -- Samples


def test_samples_shows_a_batch_filters_draws_again_and_previews_augmentation(data_dir):
    at = page("samples")
    grid = captions(at)[0]
    assert len(grid) == 100 and grid[0].startswith("1 · ")
    assert {c.split(" · ")[1] for c in grid} <= set(CLASSES)

    at.radio(key="samples_split").set_value("test").run()
    at.multiselect(key="samples_classes").set_value(["cat"]).run()
    grid = captions(at)[0]
    assert len(grid) == 10 and all(c.endswith("· cat") for c in grid)  # the tiny test split has 10 cats

    before = at.image[0].value
    at.multiselect(key="samples_classes").set_value([]).run()
    first = at.image[0].value
    at.button(key="samples_new").click().run()
    assert at.image[0].value != first and at.image[0].value != before

    at.number_input(key="samples_pick").set_value(3).run()
    assert "test image #" in captions(at)[1][0]
    at.slider(key="samples_versions").set_value(4).run()
    at.slider(key="samples_cutout").set_value(8).run()
    assert captions(at)[2] == ["original", "version 1", "version 2", "version 3", "version 4"]
    assert not at.exception
    assert len(at.get("vega_lite_chart")) == 1  # the class balance


def test_samples_without_data_says_how_to_get_it(no_data):
    at = page("samples")
    assert "No CIFAR-10 here yet" in text_of(at) and "sidebar" in text_of(at)


def test_the_pages_read_the_copy_chosen_in_the_sidebar_among_those_under_the_data_root(tmp_path, monkeypatch):
    root = tmp_path / "data"
    write_batches(root / "first")
    write_folder(root / "second")
    monkeypatch.setenv("CIFAR_DATA_DIR", str(root))
    at = page("samples")
    box = at.selectbox(key="data_dir")
    assert box.options == ["the data root: original python batches (lossless)", "second: image folder (PNG, lossless)"]
    assert str(root / "first" / "cifar-10-batches-py") in text_of(at)
    box.set_value(str(root / "second")).run()
    assert not at.exception and "No CIFAR-10 here yet" not in text_of(at)
    assert str(root / "second") in text_of(at)  # the caption names the copy it reads


@pytest.mark.parametrize("typed", ["/etc", "../../../../etc", "elsewhere"])
def test_a_browser_cannot_point_the_app_at_a_path_of_its_own(no_data, tmp_path, typed):
    write_batches(tmp_path / "elsewhere")  # a copy outside the data root: not the browser's to choose
    at = app().switch_page("app_pages/samples.py")
    at.session_state["data_dir"] = str(tmp_path / typed) if typed == "elsewhere" else typed
    at.run()
    assert not at.exception and "No CIFAR-10 here yet" in text_of(at)
    assert f"No CIFAR-10 under the data root `{tmp_path / 'nothing-here'}`" in text_of(at)  # Download goes there
    assert not at.text_input  # no box to type a server path into


# -- Evaluate


def test_evaluate_shows_accuracy_tables_a_confusion_cell_mistakes_and_the_csv(data_dir, runs_dir):
    at = page("evaluate")
    run = RunStore(runs_dir).runs()[0]
    assert at.selectbox(key="evaluate_model").value == run.id
    accuracy = float(at.metric[0].value.rstrip("%"))
    assert 10 < accuracy <= 100
    assert len(at.dataframe[0].value) == 10
    assert len(at.get("vega_lite_chart")) == 2  # per-class bars and the confusion matrix

    # the pair pickers (which a click on the chart fills) open that cell's images, most confident first
    preds = engine_predictions(run)
    pair = metrics.most_confused(preds, n=1).iloc[0]
    assert at.selectbox(key="evaluate_true").value == pair["true"]  # the most confused pair by default
    for true, predicted in [("cat", "cat"), (pair["true"], pair["predicted"])]:
        at.selectbox(key="evaluate_true").set_value(true).run()
        at.selectbox(key="evaluate_predicted").set_value(predicted).run()
        cell = metrics.select(preds, CLASSES.index(true), CLASSES.index(predicted))
        verb = "classified correctly" if true == predicted else f"predicted as **{predicted}**"
        assert f"**{len(cell)}** test images of **{true}** {verb}" in text_of(at)
        shown = gallery_captions(at, "evaluate_cell_gallery")
        assert [c.split(" · ")[0] for c in shown] == [f"#{i}" for i in cell["index"][:24]]

    at.radio(key="evaluate_normalized").set_value("share of the true class").run()
    assert not at.exception

    at.selectbox(key="evaluate_mistake_true").set_value(pair["true"]).run()
    wrong = metrics.mistakes(preds, true=CLASSES.index(pair["true"]))
    assert f"**{len(wrong)}** mistakes" in text_of(at)
    mistake_captions = gallery_captions(at, "evaluate_mistakes_gallery")
    assert len(mistake_captions) == min(24, len(wrong))
    assert all(c.startswith(f"{pair['true']} → ") and c.count("·") == 2 for c in mistake_captions)
    assert at.get("download_button")

    # every image opens the one image view: large, its label, the model's top classes and the run's record
    first = wrong.iloc[0]
    next(b for b in at.button if b.key and b.key.startswith("evaluate_mistakes_gallery_")).click().run()
    assert f"**test image #{first['index']}** · labelled **{first['true']}**" in text_of(at)
    # the same answer as Evaluate's (the run's flip TTA included)
    assert f"The model says **{first['predicted']}** ({first['confidence']:.0%}," in text_of(at)
    assert "probability at each epoch" in text_of(at)


def test_evaluate_predicts_the_test_set_once_per_model(data_dir, runs_dir, monkeypatch):
    calls = []
    real = predict

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(model_picker, "predict", counting)
    at = page("evaluate")
    at.radio(key="evaluate_normalized").set_value("share of the true class").run()
    at.selectbox(key="evaluate_true").set_value("dog").run()
    assert len(calls) == 1
    at.radio(key="evaluate_which").set_value("last").run()  # another file: predicted once more
    assert len(calls) == 2 and not at.exception


def test_evaluate_with_an_uploaded_checkpoint_and_a_corrupt_one(data_dir, no_runs):
    at = page("evaluate")
    assert "No trained model yet" in text_of(at) and "Train" in text_of(at)
    run = RunStore(trained_runs_dir()).runs()[0]
    at.file_uploader(key="evaluate_checkpoint").set_value(("tiny.pt", export_bytes(run), "application/octet-stream"))
    at.run()
    assert not at.exception and at.metric[0].label == "Test accuracy"
    at.file_uploader(key="evaluate_checkpoint").set_value(("broken.pt", b"not a checkpoint", "text/plain"))
    at.run()
    assert not at.exception and "broken.pt" in at.error[0].value and not at.metric


def test_evaluate_without_data_says_how_to_get_it(no_data, no_runs):
    assert "No CIFAR-10 here yet" in text_of(page("evaluate"))


# -- Predict


def bad_and_good_files():
    return [
        ("card.png", encode(striped(), "PNG"), "image/png"),
        ("notes.png", b"this is not an image", "image/png"),
        ("bomb.png", png_header_only(20_000, 20_000), "image/png"),
        ("empty.gif", b"", "image/gif"),
        ("gray.jpg", encode(Image.new("L", (50, 30), 90), "JPEG"), "image/jpeg"),
    ]


def test_predict_answers_each_upload_and_gives_bad_files_their_own_message(no_data, runs_dir):
    at = page("predict")
    assert "Upload one or more images" in text_of(at)
    at.file_uploader(key="predict_files").set_value(bad_and_good_files()).run()
    assert not at.exception
    answers = [m.value for m in at.markdown if " → **" in m.value]
    assert [a.split("**")[1] for a in answers] == ["card.png", "gray.jpg"]
    errors = [e.value for e in at.error]
    assert len(errors) == 3
    assert "notes.png" in errors[0] and "bomb.png" in errors[1] and "pixels" in errors[1] and "empty" in errors[2]
    assert len(at.get("vega_lite_chart")) == 4  # top-k and attention for each of the two good files
    assert any("converted from L to RGB" in c.value for c in at.caption)
    at.slider(key="predict_k").set_value(2).run()
    at.radio(key="predict_fit").set_value("pad").run()
    assert not at.exception


STRIPS = [(4000, 10), (10, 4000), (1, 300), (300, 1), (1, 1)]


def strips():
    return [(f"strip-{w}x{h}.png", encode(Image.new("RGB", (w, h), (200, 40, 40)), "PNG"), "image/png")
            for w, h in STRIPS]


@pytest.mark.parametrize("fit", ["crop", "pad", "squash"])
def test_predict_gives_every_shape_its_own_card(no_data, runs_dir, fit):
    at = page("predict")
    at.radio(key="predict_fit").set_value(fit)
    files = [strips()[0], ("notes.png", b"not an image", "image/png"), *strips()[1:], bad_and_good_files()[0]]
    at.file_uploader(key="predict_files").set_value(files).run()
    assert not at.exception
    answers = [m.value.split("**")[1] for m in at.markdown if " → **" in m.value]
    assert answers == [name for name, _, _ in files if name != "notes.png"]
    assert [e.value for e in at.error] == [f"notes.png is not a PNG, JPEG, WebP, BMP or GIF image (or it is damaged "
                                           "beyond reading)."]
    shown = [c for image in at.image for c in image.captions if c.startswith("as uploaded")]
    assert shown[:len(STRIPS)] == [f"as uploaded, {w} x {h}" for w, h in STRIPS]


def test_one_cards_failure_leaves_the_others_their_cards(no_data, runs_dir, monkeypatch):
    from ui.charts import explore

    real, calls = explore.attention_chart, []

    def second_fails(weights):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("a chart bug")
        return real(weights)

    monkeypatch.setattr(explore, "attention_chart", second_fails)
    at = page("predict")
    files = strips()[:3]
    at.file_uploader(key="predict_files").set_value(files).run()
    assert not at.exception
    assert [m.value.split("**")[1] for m in at.markdown if " → **" in m.value] == [name for name, _, _ in files]
    (error,) = at.error
    assert error.value.startswith(f"{files[1][0]} could not be shown") and "a chart bug" in error.value


def test_predict_a_random_test_image_shows_its_true_label(data_dir, runs_dir):
    at = page("predict")
    at.button(key="predict_random").click().run()
    answer = next(m.value for m in at.markdown if m.value.startswith("**test image #"))
    assert "correct" in answer or "it is a" in answer
    assert at.image[0].captions == ["test image, 32 x 32"]  # it was never uploaded


@pytest.fixture
def mislabelled_data_dir(data_dir):
    """The tiny data with every test label moved on by one class, so the model's answers are wrong."""
    path = data_dir / "cifar-10-batches-py" / "test_batch"
    batch = pickle.loads(path.read_bytes())
    batch[b"labels"] = [(label + 1) % 10 for label in batch[b"labels"]]
    path.write_bytes(pickle.dumps(batch))
    return data_dir


@pytest.mark.parametrize("true, words", [("airplane", "it is an airplane"), ("cat", "it is a cat")])
def test_a_wrong_answer_names_the_true_class_in_words(mislabelled_data_dir, runs_dir, true, words):
    preds = engine_predictions(RunStore(runs_dir).runs()[0])
    label = CLASSES.index(true)
    index = next(i for i in range(len(preds)) if (preds.labels[i] + 1) % 10 == label != preds.predicted[i])
    at = page("predict")
    at.session_state["predict_random_index"] = index  # what "Try a random test image" sets
    at.run()
    answer = next(m.value for m in at.markdown if m.value.startswith(f"**test image #{index}**"))
    assert answer.endswith(f"✗ ({words})")


def test_predict_gives_a_test_image_the_answer_evaluate_gives_it(data_dir, runs_dir):
    run = RunStore(runs_dir).runs()[0]
    preds = engine_predictions(run)
    loaded = load_run_model(run, "best")
    data = tiny_cifar()
    without_flip = predict(loaded.model, data.test_images, data.test_labels, torch.device("cpu"))
    # an image whose shown answer differs when the flip is left out
    index = next(i for i in range(len(preds)) if f"{preds.confidence[i]:.1%}" != f"{without_flip.confidence[i]:.1%}")
    at = page("predict")
    at.session_state["predict_random_index"] = index
    at.run()
    answer = next(m.value for m in at.markdown if m.value.startswith(f"**test image #{index}**"))
    assert f"→ **{CLASSES[preds.predicted[index]]}** ({preds.confidence[index]:.1%})" in answer


def test_predict_without_a_model_says_how_to_get_one(no_data, no_runs):
    at = page("predict")
    assert "No trained model yet" in text_of(at) and "python -m cifar_app.train --preset quick" in text_of(at)
    assert len(at.file_uploader) == 1  # only the checkpoint uploader


def test_evaluate_shows_no_per_image_history_from_a_run_that_trained_on_other_data(mislabelled_data_dir, runs_dir):
    at = page("evaluate")
    next(b for b in at.button if b.key and b.key.startswith("evaluate_mistakes_gallery_")).click().run()
    assert "The model says" in text_of(at)  # the model still answers for this image
    assert "probability at each epoch" not in text_of(at)  # but the record's image #i is another image
    assert "This run trained on other data" in text_of(at) and "not shown here" in text_of(at)


@pytest.fixture
def mixed_runs(tmp_path, monkeypatch):
    """Three copies of the tiny run: finished (older, the better one), finished, and the newest, stopped before
    its first epoch ended (a last checkpoint, no best)."""
    import shutil

    trained = RunStore(trained_runs_dir()).runs()[0]
    root = tmp_path / "runs"
    for run_id, status, shift in (("20990101-000001-better", "finished", 5.0), ("20990101-000002-plain", "finished", 0.0),
                                  ("20990101-000003-stopped", "stopped", None)):
        shutil.copytree(trained.path, root / run_id)
        run = RunStore(root).get(run_id)
        rows = [] if shift is None else [{**r, "test_acc": r["test_acc"] + shift} for r in trained.metrics()]
        run.write_metrics(rows)
        run.update_meta(status=status, name=run_id.split("-")[-1])
        if shift is None:
            run.checkpoint_path("best").unlink()
    monkeypatch.setenv("CIFAR_RUNS_DIR", str(root))
    return root


@pytest.mark.parametrize("name", ["evaluate", "predict"])
def test_evaluate_and_predict_open_on_the_best_finished_run_and_say_which_checkpoint(data_dir, mixed_runs, name):
    at = page(name)
    assert at.selectbox(key=f"{name}_model").value == "20990101-000001-better"
    at.selectbox(key=f"{name}_model").set_value("20990101-000003-stopped").run()
    assert not at.exception and not [r for r in at.radio if r.key == f"{name}_which"]  # no 'best' to pick
    assert "Checkpoint: **last**, the only one this run has saved." in text_of(at)


def test_an_svg_gets_its_reason_on_the_page_and_the_size_limit_is_written_there(no_data, runs_dir):
    at = page("predict")
    assert "each up to 200 MB and 40 megapixels" in text_of(at) and "refused by the browser" in text_of(at)
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="32" height="32"><rect width="32" height="32"/></svg>'
    at.file_uploader(key="predict_files").set_value([("drawing.svg", svg, "image/svg+xml")]).run()
    assert not at.exception
    assert [e.value for e in at.error] == ["drawing.svg is not a PNG, JPEG, WebP, BMP or GIF image (or it is damaged "
                                           "beyond reading)."]
