"""Baselines a model has to beat, measured on the same splits: the majority class, and a
learned linear model (logistic regression on downsampled pixels, scikit-learn).

A network that does not clearly beat a linear classifier on 16x16 pixels has learned
little that the pixels did not already say; `evaluate.min_gain_over_baseline` makes
that a reason to refuse it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

PIXELS = 16  # the learned baseline sees each image as 16x16 RGB, scaled to 0..1


def downsampled(images, size: int = PIXELS) -> np.ndarray:
    """(N, size*size*3) float32 features from an image array or a streamed split."""
    from PIL import Image

    from components.vision.records import image_batches

    rows = []
    for batch in image_batches(images, 256):
        for image in np.asarray(batch, dtype=np.uint8):
            small = Image.fromarray(image).resize((size, size), Image.Resampling.BOX)
            rows.append(np.asarray(small, np.float32).ravel() / 255.0)
    return np.stack(rows) if rows else np.zeros((0, size * size * 3), np.float32)


def scores(true: np.ndarray, predicted: np.ndarray, classes: list[str]) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score

    labels = list(range(len(classes)))
    return {
        "accuracy": round(float(accuracy_score(true, predicted)), 6),
        "macro_f1": round(
            float(f1_score(true, predicted, labels=labels, average="macro", zero_division=0)), 6
        ),
    }


def measure(train, test, classes: list[str], model_accuracy: float, seed: int = 0) -> dict:
    """{"majority", "logistic_regression", "gain_over_logistic"} on the test split, both
    fitted on the train images evaluate already holds (its stratified sample)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train_labels = np.asarray(train.labels)
    test_labels = np.asarray(test.labels)
    counts = np.bincount(train_labels, minlength=len(classes))
    majority = int(counts.argmax())
    found: dict[str, Any] = {
        "majority": {
            "class": classes[majority],
            **scores(test_labels, np.full(len(test_labels), majority), classes),
        }
    }
    if len(set(train_labels.tolist())) > 1:
        learned = make_pipeline(
            StandardScaler(),
            LogisticRegression(max_iter=300, C=0.1, random_state=seed),
        )
        learned.fit(downsampled(train.images), train_labels)
        predicted = learned.predict(downsampled(test.images))
        found["logistic_regression"] = {
            "features": f"{PIXELS}x{PIXELS} RGB pixels, standardised",
            "train_images": int(len(train_labels)),
            **scores(test_labels, predicted, classes),
        }
        found["gain_over_logistic"] = round(
            model_accuracy - found["logistic_regression"]["accuracy"], 6
        )
    return found
