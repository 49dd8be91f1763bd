"""Training input throughput: is tf.data the bottleneck, and what does it beat?

    .venv/bin/python -m benchmarks.train_throughput [--steps 30] [--large-size 224]
        [--large-steps 12] [--skip-large] [--output DIR]

All parts run in this one process, on builtin:digits:

1. Real pipeline vs the limit, default digits model (small_cnn, 32 px, the
   default `safe` augmentation). images/s of `model.fit` fed by the real
   train pipeline (TFRecords -> decode -> cache -> shuffle -> batch -> augment
   -> prefetch) against `model.fit` on the same, already augmented batches
   held in memory as arrays. Bar: >= 90%.
2. The same for MobileNetV3Small (weights none) with digits prepared at
   `--large-size` (224) px. Bar: >= 90%.
3. Augmentation in tf.data (our `safe` layers) against the legacy
   `ImageDataGenerator.flow_from_directory` (tf-keras) with equivalent
   transforms (rotation +-11 degrees, shift 0.1, zoom 0.1; ours is one RandomAffine warp), both reading the same
   folder of PNG files, producing 32x32 batches of 32; input pipeline only.
4. float32 against mixed_bfloat16 training on this CPU (default model, arrays
   in memory).

Prints one JSON object; record it in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


class Timer:
    """Seconds of each epoch after the first (which traces and fills the cache)."""

    def __init__(self):
        import keras

        class Callback(keras.callbacks.Callback):
            def on_epoch_begin(cb, epoch, logs=None):
                cb.start = time.perf_counter()

            def on_epoch_end(cb, epoch, logs=None):
                self.epochs.append(time.perf_counter() - cb.start)

        self.epochs: list[float] = []
        self.callback = Callback()


def fit_rate(model, data, steps: int, batch: int, epochs: int = 3) -> float:
    """images/s: median over the epochs after the first; data is a tf.data.Dataset or (x, y)."""
    return statistics.median(epoch_rates(model, data, steps, batch, 0, epochs))


def epoch_rates(model, data, steps: int, batch: int, first: int, last: int) -> list[float]:
    """Fit epochs first..last-1; images/s of each epoch after epoch 0 (tracing, cache fill)."""
    timer = Timer()
    if isinstance(data, tuple):
        x, y = data
        model.fit(
            x, y, batch_size=batch, initial_epoch=first, epochs=last, verbose=0, shuffle=False,
            callbacks=[timer.callback],
        )  # fmt: skip
    else:
        model.fit(data, initial_epoch=first, epochs=last, verbose=0, callbacks=[timer.callback])
    times = timer.epochs[1:] if first == 0 else timer.epochs
    return [steps * batch / t for t in times]


def pipeline_vs_memory(
    dataset: Path, model_name: str, epochs: int, width: int = 16, steps: int | None = None
) -> dict:
    """The real train pipeline against the same batches in memory, same model, whole epochs.

    The two models train in alternate epochs (memory, pipeline, memory, ...), so drift
    of this shared machine hits both; the first epoch of each (tracing, and for tf.data
    filling the cache) is not counted; the medians are compared.
    """
    import keras

    from components.infra.artifacts import read_json
    from components.train import data
    from components.train.config import TrainConfig
    from components.train.models import build_model
    from components.train.optim import compile_model
    from components.vision import augment

    config = TrainConfig(model=model_name, width=width)
    stats = read_json(dataset / "stats.json")
    size, classes = int(stats["image_size"]), len(read_json(dataset / "classes.json"))
    batch = config.batch_size
    augmenter = augment.build(config.augmentation, config.seed)
    count = int(stats["counts"]["per_split"]["train"])
    # steps: a shorter epoch for slow models, still whole passes over a cached subset
    train = data.split_dataset(
        dataset, "train", size, classes, batch, shuffle_buffer=config.shuffle_buffer,
        augment=augmenter, seed=config.seed, count=count,
        limit=steps * batch if steps else None,
    )  # fmt: skip
    batches = list(train.as_numpy_iterator())
    full = [b for b in batches if len(b[0]) == batch]  # the array run has full batches only
    x = np.concatenate([b[0] for b in full])
    y = np.concatenate([b[1] for b in full])
    n_steps = len(full)

    def fresh():
        keras.utils.set_random_seed(0)
        model = build_model(model_name, size, classes, 0.2, "none", width)
        compile_model(model, config, classes)
        return model

    memory_model, pipeline_model = fresh(), fresh()
    memory, pipeline = [], []
    for epoch in range(epochs + 1):
        memory += epoch_rates(memory_model, (x, y), n_steps, batch, epoch, epoch + 1)
        pipeline += epoch_rates(pipeline_model, train, len(batches), batch, epoch, epoch + 1)
    # the pipeline's last batch is partial: count the images it really holds
    scale = sum(len(b[0]) for b in batches) / (len(batches) * batch)
    pipeline = [r * scale for r in pipeline]
    limit, real = statistics.median(memory), statistics.median(pipeline)
    return {
        "model": model_name,
        "image_size": size,
        "batch": batch,
        "steps_per_epoch": n_steps,
        "timed_epochs": epochs,
        "in_memory_images_per_s": round(limit, 1),
        "in_memory_epochs": [round(r, 1) for r in memory],
        "tf_data_images_per_s": round(real, 1),
        "tf_data_epochs": [round(r, 1) for r in pipeline],
        "ratio": round(real / limit, 3),
    }


def augmentation_pipelines(folder: Path, batches: int, size: int = 32, batch: int = 32) -> dict:
    """tf.data + Keras layers against ImageDataGenerator.flow_from_directory, same PNGs."""
    import tensorflow as tf
    from tf_keras.preprocessing.image import ImageDataGenerator

    from components.vision import augment

    def rate(iterator_factory) -> float:
        iterator = iterator_factory()
        next(iterator)  # warm-up: tracing, thread pools
        start = time.perf_counter()
        for _ in range(batches):
            next(iterator)
        return batches * batch / (time.perf_counter() - start)

    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    files = sorted(str(p) for c in classes for p in (folder / c).glob("*.png"))
    labels = [classes.index(Path(f).parent.name) for f in files]
    augmenter = augment.build("safe", 0)

    def tf_data():
        def load(path, label):
            image = tf.io.decode_png(tf.io.read_file(path), channels=3)
            image = tf.image.resize(image, (size, size))
            return image, tf.one_hot(label, len(classes))

        ds = tf.data.Dataset.from_tensor_slices((files, labels)).shuffle(len(files), seed=0)
        ds = ds.repeat().map(load, num_parallel_calls=tf.data.AUTOTUNE).batch(batch)
        ds = ds.map(augmenter, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
        return iter(ds)

    def legacy():
        generator = ImageDataGenerator(
            rotation_range=11, width_shift_range=0.1, height_shift_range=0.1, zoom_range=0.1,
            fill_mode="constant",
        )  # fmt: skip
        return generator.flow_from_directory(
            str(folder), target_size=(size, size), batch_size=batch, class_mode="categorical",
            seed=0, interpolation="bilinear",
        )  # fmt: skip

    ours = rate(tf_data)
    theirs = rate(legacy)
    return {
        "images": len(files),
        "batches": batches,
        "tf_data_images_per_s": round(ours, 1),
        "image_data_generator_images_per_s": round(theirs, 1),
        "ratio": round(ours / theirs, 2),
    }


def precision_on_cpu(dataset: Path, steps: int) -> dict:
    import keras

    from components.train.config import TrainConfig
    from components.train.models import build_model
    from components.train.optim import compile_model
    from components.vision.records import load_split_arrays

    config = TrainConfig()
    images, labels, _ = load_split_arrays(dataset, "train", 32)
    n = steps * config.batch_size
    reps = -(-n // len(images))
    x = np.concatenate([images] * reps)[:n].astype("float32")
    y = np.eye(10, dtype="float32")[np.concatenate([labels] * reps)[:n]]
    rates = {}
    for policy in ("float32", "mixed_bfloat16", "float32"):
        keras.config.set_dtype_policy(policy)
        try:
            keras.utils.set_random_seed(0)
            model = build_model("small_cnn", 32, 10, 0.3, "none", config.width)
        finally:
            keras.config.set_dtype_policy("float32")
        compile_model(model, config, 10)
        rates.setdefault(policy, []).append(fit_rate(model, (x, y), steps, config.batch_size))
    fp32 = sum(rates["float32"]) / 2
    return {
        "float32_images_per_s": round(fp32, 1),
        "float32_runs": [round(r, 1) for r in rates["float32"]],
        "mixed_bfloat16_images_per_s": round(rates["mixed_bfloat16"][0], 1),
        "bf16_over_fp32": round(rates["mixed_bfloat16"][0] / fp32, 3),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5, help="timed epochs per mode")
    parser.add_argument("--steps", type=int, default=30, help="bf16 comparison steps")
    parser.add_argument("--large-size", type=int, default=224)
    parser.add_argument("--large-epochs", type=int, default=2)
    parser.add_argument("--large-steps", type=int, default=16, help="batches per epoch")
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--augment-batches", type=int, default=40)
    parser.add_argument("--output", default=None, help="work folder (default: a temp dir)")
    args = parser.parse_args(argv)

    from components.prepare.config import PrepareConfig
    from components.prepare.core import run as prepare
    from components.vision.digits import resolve_builtin

    work = Path(args.output or tempfile.mkdtemp(prefix="vp-throughput-"))
    result: dict = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs"}
    prepare(PrepareConfig(), "builtin:digits", work / "digits32")
    result["default_model"] = pipeline_vs_memory(work / "digits32", "small_cnn", args.epochs)
    if not args.skip_large:
        prepare(PrepareConfig(image_size=args.large_size), "builtin:digits", work / "digits_large")
        result["mobilenet_v3_small"] = pipeline_vs_memory(
            work / "digits_large", "MobileNetV3Small", args.large_epochs, steps=args.large_steps
        )
    result["augmentation_vs_image_data_generator"] = augmentation_pipelines(
        Path(resolve_builtin("builtin:digits")), args.augment_batches
    )
    result["cpu_precision"] = precision_on_cpu(work / "digits32", args.steps)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
