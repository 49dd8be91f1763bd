"""The debugging checklist, run before the long fit (`train.preflight: fail|warn|off`).

1. Look at a batch: shape, dtype, per-channel min/max/mean after the input pipeline.
   Every model here takes raw RGB 0..255 and normalises inside, so a batch in 0..1
   (scaled twice) or outside 0..255 is flagged.
2. Labels: the class histogram of the first batches against the split's class counts
   (a class the split has plenty of and the batches never show: unshuffled input).
3. The model: `model.summary()` to summary.txt, and model.png where pydot and graphviz
   are installed.
4. Overfit one batch: `preflight_steps` steps of the configured optimizer at its peak
   learning rate on one fixed batch must cut that batch's training loss (the first
   step's against the mean of the last five) by `preflight_min_loss_drop`. If they cannot, the long fit will not either: wrong
   labels, a learning rate far off, or nothing trainable. This check stops the run.
5. Gradients at step 0: the global norm per layer, vanishing (< 1e-8 or 1e-6 of the
   median) and exploding (> 1e3 or 1e4 x the median) layers flagged; a non-finite
   gradient stops the run.

The model's weights are put back afterwards and the run's own optimizer is never
touched, so the fit starts exactly where it would have. Everything is written to
`preflight.json` in the model folder.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np

from components.infra import progress
from components.infra.artifacts import write_json
from components.infra.errors import UserError

STAGE = "train"
LABEL_BATCHES = 10
VANISHING, EXPLODING = 1e-8, 1e3


class PreflightFailed(UserError):
    """A preflight check failed: one line naming it and the likely fix, exit 2."""


def first_batches(dataset, count: int) -> list[tuple[Any, np.ndarray]]:
    return [(x, np.asarray(y)) for x, y in dataset.take(count)]


def image_part(x):
    return x["image"] if isinstance(x, dict) else x


def look_at_batch(x) -> dict[str, Any]:
    images = np.asarray(image_part(x), dtype=np.float64)
    axes = tuple(range(images.ndim - 1))
    low, high = float(images.min()), float(images.max())
    record = {
        "shape": list(images.shape),
        "dtype": str(image_part(x).dtype.name),
        "channel_min": np.round(images.min(axis=axes), 3).tolist(),
        "channel_max": np.round(images.max(axis=axes), 3).tolist(),
        "channel_mean": np.round(images.mean(axis=axes), 3).tolist(),
        "flags": [],
    }
    if isinstance(x, dict) and "metadata" in x:
        record["metadata_shape"] = list(np.asarray(x["metadata"]).shape)
    if high <= 1.0 + 1e-6:
        record["flags"].append(
            f"pixel values are within {low:.3g}..{high:.3g}: they look already scaled to 0..1, "
            "but the model takes raw 0..255 RGB and normalises inside"
        )
    elif low < -1.0 or high > 256.0:
        record["flags"].append(
            f"pixel values span {low:.3g}..{high:.3g}, outside the 0..255 the model expects"
        )
    return record


def label_histogram(batches, classes: list[str], split_counts: dict[str, int]) -> dict[str, Any]:
    seen = np.zeros(len(classes), dtype=np.int64)
    for _, labels in batches:
        seen += np.bincount(labels.argmax(axis=1), minlength=len(classes))[: len(classes)]
    total_split = max(1, sum(int(split_counts.get(c, 0)) for c in classes))
    expected = [int(split_counts.get(c, 0)) / total_split for c in classes]
    record = {
        "batches": len(batches),
        "labels_seen": int(seen.sum()),
        "observed": {c: int(n) for c, n in zip(classes, seen, strict=True)},
        "expected_fraction": {c: round(f, 4) for c, f in zip(classes, expected, strict=True)},
        "flags": [],
    }
    missing = [
        c for c, n, f in zip(classes, seen, expected, strict=True) if n == 0 and f * seen.sum() >= 5
    ]
    if missing:
        record["flags"].append(
            f"classes {', '.join(missing[:5])} never appear in the first {len(batches)} batches "
            "though the split expects 5 or more of each: is the input shuffled?"
        )
    return record


def describe_model(model, work: Path) -> dict[str, Any]:
    lines: list[str] = []
    model.summary(print_fn=lambda line, *args, **kwargs: lines.append(line), expand_nested=True)
    (work / "summary.txt").write_text("\n".join(lines) + "\n")
    record = {"summary": "summary.txt"}
    try:
        import keras

        keras.utils.plot_model(model, to_file=str(work / "model.png"), show_shapes=True)
        record["plot"] = "model.png"
    except (ImportError, OSError, AttributeError) as error:  # pydot or graphviz missing
        record["plot"] = f"skipped: {' '.join(str(error).split())[:120]}"
    return record


def per_layer_norms(model, gradients) -> dict[str, float]:
    norms: dict[str, float] = {}
    for variable, gradient in zip(model.trainable_variables, gradients, strict=True):
        layer = variable.path.rsplit("/", 1)[0]
        value = 0.0 if gradient is None else float(np.sum(np.square(np.asarray(gradient))))
        norms[layer] = norms.get(layer, 0.0) + value
    return {layer: math.sqrt(total) for layer, total in norms.items()}


def gradient_flags(norms: dict[str, float]) -> list[str]:
    finite = [n for n in norms.values() if math.isfinite(n)]
    median = float(np.median(finite)) if finite else 0.0
    flags = []
    for layer, norm in norms.items():
        if not math.isfinite(norm):
            flags.append(f"{layer}: non-finite gradient")
        elif norm < VANISHING or (median and norm < 1e-6 * median):
            flags.append(f"{layer}: vanishing gradient (norm {norm:.2e}, median {median:.2e})")
        elif norm > EXPLODING or (median and norm > 1e4 * median):
            flags.append(f"{layer}: exploding gradient (norm {norm:.2e}, median {median:.2e})")
    return flags


def overfit_one_batch(s, x, y) -> tuple[dict[str, Any], dict[str, float]]:
    """Optimizer steps on one batch until the mean loss of the last five steps is
    `preflight_min_loss_drop` below the first step's (passed), or `preflight_steps` steps
    (failed when it never got there); the losses, and the per-layer gradient norms of the
    first step. A model that learns stops within tens of steps: every training pays
    for the check only what it takes. Weights and random states are restored."""
    import keras
    import tensorflow as tf

    from components.train.optim import make_optimizer

    config = s.config
    model = s.model
    plain = dataclasses.replace(config, gradient_accumulation_steps=1, ema=False)
    optimizer = make_optimizer(plain, config.learning_rate)  # peak rate, no schedule
    loss_fn = keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing)
    y = tf.constant(y, tf.float32)
    # every variable, the dropout and augmentation layers' random states included (not in
    # get_weights): the fit then draws the same masks however many steps the check took
    saved = [variable.numpy() for variable in model.variables]

    def loss_of(training: bool):
        return loss_fn(y, tf.cast(model(x, training=training), tf.float32))

    @tf.function(reduce_retracing=True)
    def step():
        with tf.GradientTape() as tape:
            loss = loss_of(True)
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(
            [
                (g, v)
                for g, v in zip(gradients, model.trainable_variables, strict=True)
                if g is not None
            ]
        )
        return loss, gradients

    # training-mode losses of the steps themselves: BatchNorm's moving statistics, which
    # lag behind in so few steps, do not blur the answer
    def dropped(losses: list[float]) -> float:
        after = float(np.mean(losses[-min(5, len(losses)) :]))
        return (losses[0] - after) / losses[0] if losses[0] > 0 else 0.0

    losses = []
    try:
        loss, first = step()
        losses.append(float(loss))
        norms = per_layer_norms(model, first)
        while len(losses) < config.preflight_steps:
            losses.append(float(step()[0]))
            if len(losses) > 5 and dropped(losses) >= config.preflight_min_loss_drop:
                break
    finally:
        for variable, value in zip(model.variables, saved, strict=True):
            variable.assign(value)
    before = losses[0]
    after = float(np.mean(losses[-min(5, len(losses)) :]))
    drop = dropped(losses)
    record = {
        "steps": len(losses),
        "max_steps": config.preflight_steps,
        "batch_size": int(y.shape[0]),
        "learning_rate": config.learning_rate,
        "loss_before": round(before, 5),
        "loss_after": round(after, 5),
        "loss_drop": round(drop, 4) if math.isfinite(drop) else None,
        "min_loss_drop": config.preflight_min_loss_drop,
        "passed": math.isfinite(after) and drop >= config.preflight_min_loss_drop,
    }
    return record, norms


def overfit_failure(s, record: dict[str, Any]) -> str:
    trainable = s.trainable.get("stage1", 0)
    return (
        f"preflight check overfit-one-batch failed: {record['steps']} steps on one batch of "
        f"{record['batch_size']} took its loss from {record['loss_before']:.4g} to "
        f"{record['loss_after']:.4g} (a {100 * (record['loss_drop'] or 0):.1f}% drop, "
        f"{100 * record['min_loss_drop']:.0f}% needed); likely fix: a learning rate near "
        f"1e-3 (train.learning_rate is {s.config.learning_rate:g}), labels that match the "
        f"images, or more trainable layers ({trainable:,} trainable weights); "
        "train.preflight=warn to train anyway"
    )


def run(s, work: Path) -> dict[str, Any] | None:
    """The checklist for the session `s` (components/train/core.py); None when off."""
    mode = s.config.preflight
    if mode == "off":
        return None
    batches = first_batches(s.train_ds, LABEL_BATCHES)
    x, y = batches[0]
    record: dict[str, Any] = {
        "mode": mode,
        "batch": look_at_batch(x),
        "labels": label_histogram(
            batches, s.classes, s.stats["counts"]["per_class_and_split"]["train"]
        ),
        "model": describe_model(s.model, work),
    }
    if s.strategy.num_replicas_in_sync > 1:
        reason = f"skipped under {s.strategy.num_replicas_in_sync} replicas (custom step)"
        record["overfit_one_batch"] = {"passed": None, "skipped": reason}
        record["gradients"] = {"skipped": reason}
        norms: dict[str, float] = {}
    else:
        record["overfit_one_batch"], norms = overfit_one_batch(s, x, y)
        record["gradients"] = {
            "step": 0,
            "per_layer_norm": {k: float(f"{v:.4g}") for k, v in norms.items()},
            "flags": gradient_flags(norms),
        }
    flags = record["batch"]["flags"] + record["labels"]["flags"]
    flags += record["gradients"].get("flags", [])
    record["flags"] = flags
    overfit = record["overfit_one_batch"]
    failures = []
    if overfit.get("passed") is False:
        failures.append(overfit_failure(s, overfit))
    non_finite = [f for f in record["gradients"].get("flags", []) if "non-finite" in f]
    if non_finite:
        failures.append(
            f"preflight check gradients failed: {non_finite[0]} at step 0; likely fix: "
            "inputs with NaN/inf, or a lower learning rate or precision float32"
        )
    record["passed"] = not failures
    write_json(work / "preflight.json", record)
    summarize(record)
    if failures and mode == "fail":
        raise PreflightFailed(failures[0])
    for failure in failures:
        progress.log(STAGE, f"warning: {failure}")
    return record


def summarize(record: dict[str, Any]) -> None:
    batch, labels, overfit = record["batch"], record["labels"], record["overfit_one_batch"]
    present = sum(1 for n in labels["observed"].values() if n)
    lines = [
        f"preflight: batch {tuple(batch['shape'])} {batch['dtype']}, pixels "
        f"{min(batch['channel_min']):.4g}..{max(batch['channel_max']):.4g} "
        f"(channel means {', '.join(f'{m:.1f}' for m in batch['channel_mean'])})",
        f"preflight: labels: {present}/{len(labels['observed'])} classes in the first "
        f"{labels['batches']} batches",
    ]
    if overfit.get("skipped"):
        lines.append(f"preflight: overfit-one-batch {overfit['skipped']}")
    else:
        lines.append(
            f"preflight: overfit-one-batch: loss {overfit['loss_before']:.4g} -> "
            f"{overfit['loss_after']:.4g} in {overfit['steps']} steps "
            + ("ok" if overfit["passed"] else "FAILED")
        )
        norms = record["gradients"]["per_layer_norm"].values()
        finite = [n for n in norms if math.isfinite(n)]
        if finite:
            lines.append(
                f"preflight: gradients at step 0: {len(finite)} layers, norms "
                f"{min(finite):.2e}..{max(finite):.2e}"
            )
    lines += [f"preflight: flag: {flag}" for flag in record["flags"]]
    for line in lines:
        progress.log(STAGE, line)
