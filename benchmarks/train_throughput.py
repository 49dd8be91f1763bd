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
   transforms (rotation +-11 degrees, shift 0.1, zoom 0.1), both reading the same
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
    """images/s over the epochs after the first; data is a tf.data.Dataset or (x, y)."""
    timer = Timer()
    if isinstance(data, tuple):
        x, y = data
        model.fit(
            x, y, batch_size=batch, epochs=epochs, verbose=0, shuffle=False,
            callbacks=[timer.callback],
        )  # fmt: skip
    else:
        model.fit(
            data.repeat(), steps_per_epoch=steps, epochs=epochs, verbose=0,
            callbacks=[timer.callback],
        )  # fmt: skip
    seconds = sum(timer.epochs[1:])
    return steps * batch * (epochs - 1) / seconds


def pipeline_vs_memory(dataset: Path, model_name: str, steps: int, width: int = 16) -> dict:
    """The real train pipeline against the same batches in memory, same model and steps."""
    import keras

    from components.common.artifacts import read_json
    from components.train import augment, data
    from components.train.config import TrainConfig
    from components.train.core import compile_model
    from components.train.models import build_model

    config = TrainConfig(model=model_name, width=width)
    stats = read_json(dataset / "stats.json")
    size, classes = int(stats["image_size"]), len(read_json(dataset / "classes.json"))
    batch = config.batch_size
    augmenter = augment.build(config.augmentation, config.seed)
    train = data.split_dataset(
        dataset, "train", size, classes, batch, shuffle_buffer=config.shuffle_buffer,
        augment=augmenter, seed=config.seed,
    )  # fmt: skip
    train = train.unbatch().batch(batch, drop_remainder=True)  # full batches only, like memory
    xs, ys = [], []
    for x, y in train.take(steps).repeat().take(steps).as_numpy_iterator():
        xs.append(x)
        ys.append(y)
    x, y = np.concatenate(xs), np.concatenate(ys)

    def fresh():
        keras.utils.set_random_seed(0)
        model = build_model(model_name, size, classes, 0.2, "none", width)
        compile_model(model, config, classes)
        return model

    memory = fit_rate(fresh(), (x, y), steps, batch)
    pipeline = fit_rate(fresh(), train, steps, batch)
    memory_again = fit_rate(fresh(), (x, y), steps, batch)  # the machine drifts: bracket it
    limit = (memory + memory_again) / 2
    return {
        "model": model_name,
        "image_size": size,
        "batch": batch,
        "steps_per_epoch": steps,
        "in_memory_images_per_s": round(limit, 1),
        "in_memory_runs": [round(memory, 1), round(memory_again, 1)],
        "tf_data_images_per_s": round(pipeline, 1),
        "ratio": round(pipeline / limit, 3),
    }


def augmentation_pipelines(folder: Path, batches: int, size: int = 32, batch: int = 32) -> dict:
    """tf.data + Keras layers against ImageDataGenerator.flow_from_directory, same PNGs."""
    import tensorflow as tf
    from tf_keras.preprocessing.image import ImageDataGenerator

    from components.train import augment

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

    from components.common.records import load_split_arrays
    from components.train.config import TrainConfig
    from components.train.core import compile_model
    from components.train.models import build_model

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
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--large-size", type=int, default=224)
    parser.add_argument("--large-steps", type=int, default=12)
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--augment-batches", type=int, default=40)
    parser.add_argument("--output", default=None, help="work folder (default: a temp dir)")
    args = parser.parse_args(argv)

    from components.common.digits import resolve_builtin
    from components.prepare.config import PrepareConfig
    from components.prepare.core import run as prepare

    work = Path(args.output or tempfile.mkdtemp(prefix="vp-throughput-"))
    result: dict = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs"}
    prepare(PrepareConfig(), "builtin:digits", work / "digits32")
    result["default_model"] = pipeline_vs_memory(work / "digits32", "small_cnn", args.steps)
    if not args.skip_large:
        prepare(PrepareConfig(image_size=args.large_size), "builtin:digits", work / "digits_large")
        result["mobilenet_v3_small"] = pipeline_vs_memory(
            work / "digits_large", "MobileNetV3Small", args.large_steps
        )
    result["augmentation_vs_image_data_generator"] = augmentation_pipelines(
        Path(resolve_builtin("builtin:digits")), args.augment_batches
    )
    result["cpu_precision"] = precision_on_cpu(work / "digits32", args.steps)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
