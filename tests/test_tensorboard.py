"""TensorBoard complete: scalars, weight histograms, the graph, the images and a profile,
read back from the event files with TensorBoard's own EventAccumulator."""

from pathlib import Path

import pytest


def events(folder: Path):
    """Every run folder under `folder` with its tags, as TensorBoard loads them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found = {}
    for run in sorted({p.parent for p in folder.rglob("events.out.tfevents.*")}):
        loaded = EventAccumulator(str(run), size_guidance={"tensors": 0, "images": 0}).Reload()
        found[run.relative_to(folder).as_posix()] = loaded
    return found


def tensor_tags(accumulator, plugin: str) -> set[str]:
    """The summaries of one TensorBoard plugin (scalars, histograms, images, the graph)."""
    return {
        tag
        for tag in accumulator.Tags()["tensors"]
        if accumulator.SummaryMetadata(tag).plugin_data.plugin_name == plugin
    }


def test_training_writes_scalars_histograms_graph_and_images(trained_model):
    runs = events(trained_model / "tensorboard")
    train, validation = runs["train"], runs["validation"]
    assert {"epoch_loss", "epoch_accuracy"} <= tensor_tags(train, "scalars")
    assert {"epoch_loss", "epoch_accuracy"} <= tensor_tags(validation, "scalars")
    histograms = tensor_tags(train, "histograms")
    assert any("kernel" in tag for tag in histograms), histograms  # the weights, per layer
    assert tensor_tags(train, "graph_keras_model") == {"keras"}  # the model graph
    images = tensor_tags(runs["images"], "images")
    assert {"train/augmentation_preview", "train/history"} <= images


def test_evaluation_writes_the_confusion_matrix_and_error_gallery(evaluation):
    (run,) = events(evaluation / "tensorboard").values()
    assert {"evaluation/confusion_matrix", "evaluation/error_gallery"} <= tensor_tags(run, "images")


@pytest.mark.slow
def test_profile_batches_writes_a_profile(tmp_path):
    """One epoch of the tiny digits in batches of 8 (8 steps: steps 2 and 3 exist to be
    profiled); the preflight check is test_preflight.py's."""
    from components.train.config import TrainConfig
    from components.train.core import run
    from tests.tiny import tiny_digits

    config = TrainConfig(
        epochs=1, width=4, batch_size=8, profile_batches="2,3", tensorboard_histograms=False,
        preflight="off",
    )  # fmt: skip
    run(config, tiny_digits(tmp_path / "tiny"), tmp_path / "model")
    profiles = list((tmp_path / "model" / "tensorboard").rglob("*.xplane.pb"))
    assert profiles, sorted(p.name for p in (tmp_path / "model" / "tensorboard").rglob("*"))
    histograms = tensor_tags(events(tmp_path / "model" / "tensorboard")["train"], "histograms")
    assert histograms == set()  # tensorboard_histograms off


def test_profile_batches_is_validated():
    from components.infra.errors import UserError
    from components.train.config import TrainConfig

    for bad in ("5", "3,1", "0,2", "a,b"):
        with pytest.raises(UserError, match="profile_batches"):
            TrainConfig(profile_batches=bad).validate()
    TrainConfig(profile_batches="3, 5").validate()
