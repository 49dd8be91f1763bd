"""The learning rate, the optimizer and compiling a model with them (train.* settings)."""

from __future__ import annotations

from components.train.config import TrainConfig


def learning_rate(config: TrainConfig, rate: float, epochs: int, steps_per_epoch: int):
    """A float (plateau: ReduceLROnPlateau adjusts it) or a schedule over optimizer steps."""
    import keras

    if config.lr_schedule == "plateau":
        return rate
    warmup = config.warmup_epochs * steps_per_epoch
    total = max(1, epochs * steps_per_epoch)
    if config.lr_schedule == "constant":
        if not warmup:
            return rate
        return keras.optimizers.schedules.PolynomialDecay(  # linear ramp, then flat
            rate / 100, warmup, end_learning_rate=rate, power=1.0
        )
    if not warmup:
        return keras.optimizers.schedules.CosineDecay(rate, total, alpha=0.01)
    return keras.optimizers.schedules.CosineDecay(
        rate / 100, max(1, total - warmup), alpha=0.01, warmup_target=rate, warmup_steps=warmup
    )


def make_optimizer(config: TrainConfig, rate):
    import keras

    common = {
        "global_clipnorm": config.clip_norm or None,
        "use_ema": config.ema,
        "ema_momentum": config.ema_momentum,
    }
    if config.gradient_accumulation_steps > 1:
        common["gradient_accumulation_steps"] = config.gradient_accumulation_steps
    if config.optimizer == "adam":
        return keras.optimizers.Adam(rate, **common)
    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(rate, weight_decay=config.weight_decay, **common)
    if config.optimizer == "lion":
        return keras.optimizers.Lion(rate, weight_decay=config.weight_decay or None, **common)
    return keras.optimizers.SGD(
        rate, momentum=0.9, nesterov=True, weight_decay=config.weight_decay or None, **common
    )


def compile_model(model, config: TrainConfig, num_classes: int, rate=None) -> None:
    import keras

    metrics = ["accuracy"]
    if num_classes > 10:
        metrics.append(keras.metrics.TopKCategoricalAccuracy(k=5, name="top5_accuracy"))
    model.compile(
        optimizer=make_optimizer(config, config.learning_rate if rate is None else rate),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        metrics=metrics,
    )
