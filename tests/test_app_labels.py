"""The label-errors loop in the browser's pages, in AppTest on tiny data: the Dynamics page's search results,
accepting the top N after a preview, undo, a decision image by image, "Train on these labels" (a run on the edited
set through the app's job), the Runs page naming each run's label set, and the Train page's label-set selector."""

import numpy as np
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from cifar_app.analysis import dynamics
from cifar_app.analysis.label_errors import detect, save_results
from cifar_app.data.labels import EXCLUDED, LabelStore
from cifar_app.store.runs import RunStore
from conftest import ROOT, make_images
from test_app_dynamics import copied_run  # noqa: F401 (fixture)
from test_app_explore import data_dir  # noqa: F401 (fixture)
from ui import common

TIMEOUT = 60


@pytest.fixture
def searched(data_dir, copied_run):  # noqa: F811
    """The tiny run with a search's results saved beside it (made-up out-of-fold probabilities: every tenth image
    looks like the next class)."""
    st.cache_resource.clear()
    records = dynamics.load_records(copied_run.path)
    table = dynamics.image_table(records)
    index, labels = records.train_index[table.index], records.train_labels[table.index]
    probs = np.full((len(index), 10), 0.02)
    probs[np.arange(len(index)), labels] = 0.82
    odd = np.arange(len(index)) % 10 == 0
    probs[odd] = 0.02
    probs[odd, (labels[odd] + 1) % 10] = 0.82
    results = detect(index, labels, probs, np.where(odd, 0.6, -0.6))
    save_results(copied_run.path, results, None, {"folds": 2, "labels": "", "flagged": {
        d: int(results[f"{d}_flag"].sum()) for d in ("dynamics", "cleanlab", "combined")}})
    yield copied_run, results
    assert common.job_manager().shutdown(), "the training job did not stop"
    st.cache_resource.clear()


def dynamics_page() -> AppTest:
    at = AppTest.from_file(str(ROOT / "app_pages" / "dynamics.py"), default_timeout=TIMEOUT).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest) -> str:
    return "\n".join(str(e.value) for kind in ("markdown", "success", "info", "error", "caption")
                     for e in getattr(at, kind))


def test_accept_the_top_n_undo_review_one_and_train_on_the_edited_labels(data_dir, searched):  # noqa: F811
    run, results = searched
    flagged = results[results["combined_flag"]]
    at = dynamics_page()
    assert f"**{len(flagged):,}** flagged images not reviewed yet" in texts(at)
    assert at.button(key="labels_find").label == "Search again"
    at.number_input(key="labels_top").set_value(3)
    at.button(key="labels_accept").click().run()
    assert not at.exception, [e.value for e in at.exception]
    own = make_images(20, seed=1)[1]
    label_set = LabelStore(data_dir).get("cifar10")  # the dataset's own labels, made a set on the first edit
    labels = label_set.labels()
    top = flagged.head(3)
    assert label_set.latest == 1 and int((labels != own).sum()) == 3
    assert [labels[i] for i in top["index"]] == [list(dynamics.CLASSES).index(s) for s in top["suggested"]]
    assert "Saved as cifar10@1" in texts(at) and f"**{len(flagged) - 3:,}** flagged images" in texts(at)

    at.button(key="labels_undo").click().run()
    assert label_set.latest == 2 and np.array_equal(label_set.labels(), own)

    first = int(flagged.iloc[0]["index"])
    at.radio(key=f"labels_decision_{first}").set_value("exclude").run()
    at.button(key="labels_save").click().run()
    assert not at.exception and label_set.labels()[first] == EXCLUDED and label_set.latest == 3

    at.button(key="labels_train").click().run()
    assert not at.exception, [e.value for e in at.exception]
    manager = common.job_manager()
    assert manager.wait(TIMEOUT) and manager.snapshot().status == "finished", manager.snapshot().message
    new = RunStore(run.path.parent).get(manager.snapshot().run_id)
    assert new.config().labels == "cifar10@3" and new.config_record()["labels"]["excluded"] == 1
    assert new.config_record()["train_images"] == 199

    runs = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=TIMEOUT).run()
    runs.switch_page("app_pages/runs.py").run()
    assert not runs.exception, [e.value for e in runs.exception]
    table = runs.dataframe[0].value
    assert "cifar10@3" in set(table["labels"].astype(str))
    side = next(d.value for d in runs.dataframe if "recipe" in d.value.columns)  # the same recipe on other labels
    assert list(side["labels"]) == ["cifar10@3", "own"] and side["final_test_acc"].notna().all()


def test_the_train_page_offers_the_label_sets_beside_the_data(data_dir, searched):  # noqa: F811
    own = make_images(20, seed=1)[1]
    LabelStore(data_dir).create("mine", own, own, "test")
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=TIMEOUT).run()
    at.switch_page("app_pages/train.py").run()
    box = at.selectbox(key="cfg_labels")
    assert box.options == ["the dataset's own labels", "mine@0 (200 labels, 0 changed, 0 excluded)"]
    box.set_value("mine").run()
    assert not at.exception and at.session_state["cfg_labels"] == "mine"


def _fix_view(root: str, split: str, index: int) -> None:
    """The image view's fix controls alone (a dialog's widgets rerun only the dialog in a browser, which AppTest
    does not do: the dialog itself is driven in tests/test_browser_explore.py)."""
    from cifar_app.data.labels import OWN
    from conftest import tiny_cifar
    from ui.image_view import ImageRef, ViewSource, fix_label

    data = tiny_cifar()
    label = int(data.split(split)[1][index])
    fix_label(ImageRef(split, index), ViewSource(data, None, label_set=(root, OWN)), label, (label + 1) % 10)


def test_the_image_view_fixes_one_label_from_any_gallery(data_dir):  # noqa: F811
    own = make_images(20, seed=1)[1]
    at = AppTest.from_function(_fix_view, args=(str(data_dir), "train", 7), default_timeout=TIMEOUT).run()
    assert at.selectbox(key="fix_class_train_7").value == dynamics.CLASSES[(own[7] + 1) % 10]  # the suggestion
    at.button(key="fix_exclude_train_7").click().run()
    assert not at.exception, [e.value for e in at.exception]
    label_set = LabelStore(data_dir).get("cifar10")  # the dataset's own labels, made a set on the first fix
    assert label_set.latest == 1 and label_set.labels()[7] == EXCLUDED and "Saved as cifar10@1" in texts(at)
    # a test image's fix is a correction of the set's test labels (Evaluate's mistakes open the same view)
    test_own = make_images(10, seed=2)[1]
    at = AppTest.from_function(_fix_view, args=(str(data_dir), "test", 3), default_timeout=TIMEOUT).run()
    at.selectbox(key="fix_class_test_3").set_value("truck")
    at.button(key="fix_relabel_test_3").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert label_set.latest == 2 and label_set.test_labels(test_own)[3] == 9
    assert np.array_equal(label_set.labels()[8:], own[8:])


def test_flagged_test_images_are_listed_and_a_corrected_one_leaves_the_list(data_dir, searched):  # noqa: F811
    run, results = searched
    test_labels = make_images(10, seed=2)[1]
    probs = np.full((len(test_labels), 10), 0.02)
    probs[np.arange(len(test_labels)), test_labels] = 0.82
    odd = np.arange(len(test_labels)) % 10 == 3  # every tenth test image looks like the next class
    probs[odd] = 0.02
    probs[odd, (test_labels[odd] + 1) % 10] = 0.82
    test = detect(np.arange(len(test_labels)), test_labels, probs, np.where(odd, 0.6, -0.6))
    save_results(run.path, results, test, {"folds": 2, "labels": "", "flagged": {
        d: int(results[f"{d}_flag"].sum()) for d in ("dynamics", "cleanlab", "combined")}})
    flagged_test = test[test["combined_flag"]]
    assert len(flagged_test) > 1

    at = dynamics_page()
    at.segmented_control(key="labels_split").set_value("test").run()
    assert not at.exception, [e.value for e in at.exception]
    assert f"**{len(flagged_test):,}** flagged test images not reviewed yet" in texts(at)
    first = flagged_test.iloc[0]
    caption = f"#{first['index']} {first['label']} → {first['suggested']}"
    assert caption in [b.label for b in at.button]  # a caption opens the image, whose view corrects the label

    own = make_images(20, seed=1)[1]
    label_set = LabelStore(data_dir).editable("cifar10", own)
    label_set.edit([("test", int(first["index"]), dynamics.CLASSES.index(first["suggested"]))],
                   dataset_test=test_labels)
    at.run()
    assert f"**{len(flagged_test) - 1:,}** flagged test images not reviewed yet (1 reviewed" in texts(at)
    assert caption not in [b.label for b in at.button]
