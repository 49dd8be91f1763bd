"""The train stage's config."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from components.infra.config import StageConfig


def profile_range(text: str) -> tuple[int, int] | int | None:
    """train.profile_batches as Keras' TensorBoard takes it: 0 (off) or (start, stop);
    None when it is neither."""
    if not text.strip():
        return 0
    parts = text.replace(" ", "").split(",")
    if len(parts) != 2 or not all(p.isdigit() and int(p) >= 1 for p in parts):
        return None
    start, stop = int(parts[0]), int(parts[1])
    return (start, stop) if start <= stop else None


@dataclass
class TrainConfig(StageConfig):
    """What model to build and how to fit it."""

    section = "train"

    model: str = "small_cnn"  # from scratch; or a keras.applications name, e.g. MobileNetV3Small
    width: int = 16  # small_cnn: filters of the first block (then 2x, 4x); 16 gives 73k weights
    weights: str = "none"  # backbones only: none | imagenet | path or gs:// to a weights file
    augmentation: str = "safe"  # preset; "safe" has no flips, so digits and text stay themselves
    # with augmentation: custom, the Keras layers to apply, e.g. [{RandomFlip: {mode: horizontal}}]
    augmentation_layers: list[dict | str] = field(default_factory=list)
    epochs: int = 40
    batch_size: int = 32  # 40 steps per epoch on the 1,257 digits train images
    optimizer: Literal["adam", "adamw", "sgd", "lion"] = "adamw"
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    label_smoothing: float = 0.05
    dropout: float = 0.3
    use_class_weights: bool = False  # weights from prepare's stats.json, for imbalanced data
    lr_schedule: Literal["plateau", "cosine", "constant"] = "plateau"
    warmup_epochs: int = 0  # linear warm-up to learning_rate (cosine and constant schedules)
    clip_norm: float = 0.0  # clip the global gradient norm to this; 0 = off
    gradient_accumulation_steps: int = 1  # apply the summed gradients of N batches at once
    ema: bool = False  # keep an exponential moving average of the weights; it is what is saved
    ema_momentum: float = 0.99
    # stochastic weight averaging: average the weights at the end of every epoch from this
    # one (1-based, of the last fitting stage) on, then re-estimate BatchNorm; 0 = off
    swa_start: int = 0
    # K > 1: train K members and average their probabilities in one model (what evaluate
    # and export see); members differ by seed, or each leaves out one fold of kfold.csv
    # >= 2: K-fold cross-validation over train+val before the model itself is trained
    # (components/train/crossval.py): the mean and spread of the val metrics, per fold
    cross_validate: int = 0
    ensemble: int = 1
    ensemble_from: Literal["seeds", "kfold"] = "seeds"
    # stage 2 for pretrained backbones: unfreeze the top N backbone layers (0 = all),
    # BatchNorm stays frozen, learning rate x fine_tune_learning_rate_factor
    fine_tune_epochs: int = 0
    fine_tune_layers: int = 0
    fine_tune_learning_rate_factor: float = 0.1
    # manifest columns fed as a second model input, e.g. [camera, exposure, site:categorical];
    # numeric or categorical is inferred from the train split unless `name:kind` says
    metadata_columns: list[str] = field(default_factory=list)
    teacher: str = ""  # a trained model folder: distil its soft targets into this model
    distillation_temperature: float = 4.0
    distillation_alpha: float = 0.3  # weight of the label loss; the rest is the teacher's
    # auto: MirroredStrategy over all GPUs when there are several; mirrored: also over CPUs
    distribute: Literal["auto", "none", "mirrored"] = "auto"
    # auto: bit-for-bit repeatable on CPU (op determinism), free-running on GPUs
    deterministic: Literal["auto", "on", "off"] = "auto"
    early_stopping_patience: int = 12
    reduce_lr_patience: int = 5
    # a mid-epoch checkpoint (weights, optimizer, epoch, step), synced to the durable state,
    # every this much training: "5m", "300s", or a number of steps; "0": at epoch ends only.
    # SIGTERM (preemption) always writes one at the next step (components/train/preemption.py)
    checkpoint_every: str = "5m"
    tensorboard_histograms: bool = True  # weight histograms every epoch (with scalars, graph)
    profile_batches: str = ""  # "" off; "3,5": profile those steps (tensorboard-plugin-profile)
    shuffle_buffer: int = 4096
    # where the decoded train and val splits live after the first epoch: auto keeps them in
    # RAM when they fit a quarter of the container's memory limit (cgroup) or the machine's,
    # else on local disk (else decodes every epoch); the choice is logged and recorded
    cache: Literal["auto", "memory", "disk", "none"] = "auto"
    # auto: mixed_float16 on CUDA GPUs with compute capability >= 7.0, float32 otherwise
    precision: Literal["auto", "float32", "mixed_float16", "mixed_bfloat16"] = "auto"
    seed: int = 42
    # the debugging checklist before the long fit (components/train/preflight.py): fail stops
    # the run when one batch cannot be overfitted, warn only says so, off skips it
    preflight: Literal["fail", "warn", "off"] = "fail"
    preflight_steps: int = 100  # optimizer steps on one batch
    preflight_min_loss_drop: float = 0.2  # the fraction of that batch's loss they must remove

    def validate(self) -> None:
        self.check_locations("weights")
        # plain values first: a wrong number is refused before Keras is imported
        self.check_numbers()
        self.check_averaging()
        self.check_fine_tuning()
        self.check_model_and_augmentation()
        self.check_metadata_columns()
        self.check_pretrained_for_fine_tuning()
        self.check_distillation()
        self.check_weights()

    def check_numbers(self) -> None:
        self.check(self.epochs >= 1, "epochs", "expected >= 1")
        self.check(4 <= self.width <= 512, "width", "expected 4..512")
        self.check(1 <= self.batch_size <= 4096, "batch_size", "expected 1..4096")
        self.check(0 < self.learning_rate < 1, "learning_rate", "expected 0 < value < 1")
        self.check(0 <= self.weight_decay < 1, "weight_decay", "expected 0 <= value < 1")
        self.check(0 <= self.label_smoothing < 1, "label_smoothing", "expected 0 <= value < 1")
        self.check(0 <= self.dropout < 1, "dropout", "expected 0 <= value < 1")
        self.check(self.early_stopping_patience >= 1, "early_stopping_patience", "expected >= 1")
        self.check(self.reduce_lr_patience >= 1, "reduce_lr_patience", "expected >= 1")
        from components.train.preemption import EVERY

        self.check(
            profile_range(self.profile_batches) is not None,
            "profile_batches",
            'expected "" (off) or "START,STOP" steps such as "3,5"',
        )
        self.check(
            EVERY.match(self.checkpoint_every.strip()) is not None,
            "checkpoint_every",
            "expected minutes (5m), seconds (300s), a number of steps (200), or 0 (off)",
        )
        self.check(self.shuffle_buffer >= 1, "shuffle_buffer", "expected >= 1")
        self.check(
            0 <= self.warmup_epochs < self.epochs, "warmup_epochs", "expected 0 <= value < epochs"
        )
        self.check(self.clip_norm >= 0, "clip_norm", "expected >= 0 (0 = off)")
        self.check(
            1 <= self.gradient_accumulation_steps <= 1024,
            "gradient_accumulation_steps",
            "expected 1..1024",
        )
        self.check(0 < self.ema_momentum < 1, "ema_momentum", "expected 0 < value < 1")
        self.check(1 <= self.preflight_steps <= 10000, "preflight_steps", "expected 1..10000")
        self.check(
            0 <= self.preflight_min_loss_drop < 1,
            "preflight_min_loss_drop",
            "expected a fraction 0 <= value < 1",
        )

    def check_averaging(self) -> None:
        """EMA, SWA and ensembles."""
        last_stage = self.fine_tune_epochs or self.epochs
        self.check(
            0 <= self.swa_start <= last_stage,
            "swa_start",
            f"expected 0 (off) .. {last_stage} (the epochs of the last fitting stage)",
        )
        self.check(
            not (self.swa_start and self.ema),
            "swa_start",
            "SWA and EMA are two ways to average the weights: set ema false or swa_start 0",
        )
        self.check(1 <= self.ensemble <= 20, "ensemble", "expected 1 (one model) .. 20 members")
        self.check(
            self.cross_validate == 0 or 2 <= self.cross_validate <= 20,
            "cross_validate",
            "expected 0 (off) or 2..20 folds",
        )
        self.check(
            not (self.cross_validate and self.ensemble > 1),
            "cross_validate",
            "cross-validates one model: set ensemble 1 (or cross_validate 0)",
        )
        self.check(
            not (self.ensemble_from == "kfold" and self.metadata_columns),
            "ensemble_from",
            "k-fold members with metadata_columns are not supported; use seeds",
        )

    def check_fine_tuning(self) -> None:
        self.check(self.fine_tune_epochs >= 0, "fine_tune_epochs", "expected >= 0")
        self.check(self.fine_tune_layers >= 0, "fine_tune_layers", "expected >= 0 (0 = all)")
        self.check(
            0.01 <= self.fine_tune_learning_rate_factor <= 0.1,
            "fine_tune_learning_rate_factor",
            "expected 0.01..0.1 (a 10-100x lower learning rate for stage 2)",
        )

    def check_pretrained_for_fine_tuning(self) -> None:
        if self.fine_tune_epochs:
            from components.train.models import is_pretrained

            self.check(
                is_pretrained(self.model, self.weights),
                "fine_tune_epochs",
                "stage 2 unfreezes a pretrained backbone; from-scratch models (small_cnn, "
                "resnet_mini, or weights: none) train in one stage, so use 0",
            )

    def check_model_and_augmentation(self) -> None:
        from components.vision.catalog import AUGMENTATION_PRESETS as PRESETS
        from components.vision.catalog import known_models

        self.check(
            self.model in known_models(), "model", f"expected one of {', '.join(known_models())}"
        )
        self.check(
            self.augmentation in (*PRESETS, "custom"),
            "augmentation",
            f"expected one of {', '.join(PRESETS)}, custom",
        )
        self.check(
            (self.augmentation == "custom") == bool(self.augmentation_layers),
            "augmentation_layers",
            "a list of layers goes with augmentation: custom, and custom needs one",
        )
        if self.augmentation_layers:
            from components.vision.augment import parse_custom

            parse_custom(self.augmentation_layers, self.seed)  # names and arguments, now

    def check_weights(self) -> None:
        from components.vision.catalog import FROM_SCRATCH_MODELS

        if self.model in FROM_SCRATCH_MODELS:
            self.check(
                self.weights == "none",
                "weights",
                f"the from-scratch {self.model} has no pretrained weights; use none",
            )

    def check_metadata_columns(self) -> None:
        if self.metadata_columns:
            from components.vision.metadata import parse_spec

            names = []
            for entry in self.metadata_columns:
                try:
                    names.append(parse_spec(entry)[0])
                except ValueError as error:
                    self.check(False, "metadata_columns", f"column names of the manifest: {error}")
            self.check(
                len(set(names)) == len(names), "metadata_columns", "each column at most once"
            )

    def check_distillation(self) -> None:
        self.check(
            self.distillation_temperature >= 1,
            "distillation_temperature",
            "expected >= 1",
        )
        self.check(0 <= self.distillation_alpha <= 1, "distillation_alpha", "expected 0..1")
