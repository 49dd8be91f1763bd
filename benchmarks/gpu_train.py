"""Training throughput on a GPU: float32 against mixed precision, per backbone.

    KERAS_BACKEND=jax python -m benchmarks.gpu_train \
        [--models EfficientNetB0,ResNet50] [--size 224] [--batch 128] \
        [--steps 30] [--warmup 5] [--policies float32,mixed_float16,mixed_bfloat16]

Synthetic data (random pixels, random labels) placed on the accelerator once,
so the number is the model's training step and nothing else: forward, backward
and the optimizer update, as `model.fit` runs them (`train_on_batch`, jit-compiled).
Each policy builds a fresh model (weights none, our classifier head with a
float32 softmax). The first `--warmup` steps (compilation) are not timed;
the loss of the last step is read back, which waits for the device.

Prints one JSON line per (model, policy) and a summary with the speed-up of
each mixed policy over float32 on the same machine in the same process. Backend
agnostic: the tests run it on CPU with TensorFlow and tiny sizes; on a lent GPU
machine (which has JAX, not TensorFlow) run it with KERAS_BACKEND=jax.
"""

from __future__ import annotations

import argparse
import json
import platform
import time


def device_description() -> str:
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return ", ".join(f"{d.platform}:{d.device_kind}" for d in jax.devices())
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        return ", ".join(g.name for g in gpus) or f"cpu:{platform.processor() or 'x86_64'}"
    return backend


def on_device(array):
    """Put a numpy array on the accelerator once, so the timed loop does no host copies."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        return jax.device_put(array)
    return keras.ops.convert_to_tensor(array)


def build(model_name: str, size: int, classes: int):
    import keras

    # XLA on JAX (it always compiles); TensorFlow's XLA on CPU costs minutes
    # of compilation for a tiny run, so the CPU test path runs graph mode.
    jit = keras.backend.backend() == "jax"

    backbone_cls = getattr(keras.applications, model_name)
    inputs = keras.Input((size, size, 3))
    features = backbone_cls(include_top=False, weights=None, input_shape=(size, size, 3))(inputs)
    x = keras.layers.GlobalAveragePooling2D()(features)
    x = keras.layers.Dropout(0.2)(x)
    outputs = keras.layers.Dense(classes, activation="softmax", dtype="float32")(x)
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.AdamW(1e-3),
        loss="sparse_categorical_crossentropy",
        jit_compile=jit,
    )
    return model


def measure(model_name: str, policy: str, size: int, batch: int, steps: int, warmup: int) -> dict:
    import keras
    import numpy as np

    keras.mixed_precision.set_global_policy(policy)
    try:
        keras.utils.set_random_seed(0)
        model = build(model_name, size, classes=10)
        rng = np.random.default_rng(0)
        images = on_device(rng.uniform(0, 255, (batch, size, size, 3)).astype("float32"))
        labels = on_device(rng.integers(0, 10, (batch,)).astype("int32"))
        compile_start = time.perf_counter()
        for _ in range(warmup):
            loss = model.train_on_batch(images, labels)
        compile_seconds = time.perf_counter() - compile_start
        start = time.perf_counter()
        for _ in range(steps):
            loss = model.train_on_batch(images, labels)
        loss = float(np.asarray(loss))  # waits for the device
        seconds = time.perf_counter() - start
    finally:
        keras.mixed_precision.set_global_policy("float32")
        keras.backend.clear_session()
    return {
        "model": model_name,
        "policy": policy,
        "size": size,
        "batch": batch,
        "steps": steps,
        "warmup_seconds": round(compile_seconds, 2),
        "step_ms": round(1000 * seconds / steps, 2),
        "images_per_second": round(batch * steps / seconds, 1),
        "final_loss_finite": bool(np.isfinite(loss)),
    }


def speedups(results: list[dict]) -> dict:
    """images/s of every mixed policy divided by float32's, per model."""
    out = {}
    for r in results:
        if r["policy"] == "float32":
            continue
        base = next(
            (b for b in results if b["model"] == r["model"] and b["policy"] == "float32"), None
        )
        if base:
            ratio = r["images_per_second"] / base["images_per_second"]
            out[f"{r['model']}:{r['policy']}"] = round(ratio, 2)
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="EfficientNetB0,ResNet50")
    parser.add_argument("--policies", default="float32,mixed_float16,mixed_bfloat16")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args(argv)

    import keras

    print(
        json.dumps(
            {
                "backend": keras.backend.backend(),
                "keras": keras.__version__,
                "device": device_description(),
            }
        ),
        flush=True,
    )
    results = []
    for model_name in args.models.split(","):
        for policy in args.policies.split(","):
            result = measure(model_name, policy, args.size, args.batch, args.steps, args.warmup)
            print(json.dumps(result), flush=True)
            results.append(result)
    summary = {"speedup_over_float32": speedups(results)}
    print(json.dumps(summary), flush=True)
    return {"results": results, **summary}


if __name__ == "__main__":
    main()
