"""The tune section: the search's algorithm, budget, objective and space."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from components.infra.config import StageConfig
from components.infra.errors import UserError

STAGE = "tune"
# what a search explores when the config does not say: the settings the lecture names
DEFAULT_SPACE: dict[str, Any] = {
    "learning_rate": {"min": 3e-4, "max": 1e-2, "log": True},
    "dropout": {"min": 0.0, "max": 0.5},
    "width": [8, 16, 32],
    "label_smoothing": {"min": 0.0, "max": 0.1},
    "optimizer": ["adamw", "sgd"],
}
NOT_TUNABLE = {
    "epochs", "seed", "teacher", "metadata_columns", "augmentation_layers", "cross_validate",
}  # fmt: skip


@dataclass
class TuneConfig(StageConfig):
    """The search: its algorithm, budget, objective and space (`tune:` in a run config)."""

    section = "tune"

    algorithm: Literal["bayesian", "hyperband", "random"] = "bayesian"
    trials: int = 10  # trials at most (hyperband: also bounded by its brackets)
    max_epochs: int = 0  # epochs per trial (hyperband: the most a trial gets); 0: train.epochs
    objective: Literal["val_accuracy", "val_loss"] = "val_accuracy"
    # K >= 2: each trial is K-fold cross-validated (train.cross_validate) and scored by the
    # folds' mean objective, not by one val split; 0: the val split (or train's own setting)
    cross_validate: int = 0
    # train key -> a choice [a, b, ...] or a range {min, max, log?, step?}
    space: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_SPACE))
    parallel_trials: int = 2  # Katib: trials at once
    hyperband_factor: int = 3
    seed: int = 7

    def validate(self) -> None:
        self.check(1 <= self.trials <= 10_000, "trials", "expected 1..10000")
        self.check(self.max_epochs >= 0, "max_epochs", "expected >= 0 (0: train.epochs)")
        self.check(1 <= self.parallel_trials <= 1000, "parallel_trials", "expected 1..1000")
        self.check(
            self.cross_validate == 0 or 2 <= self.cross_validate <= 20,
            "cross_validate",
            "expected 0 (score on val) or 2..20 folds",
        )
        self.check(2 <= self.hyperband_factor <= 10, "hyperband_factor", "expected 2..10")
        self.check(bool(self.space), "space", "expected at least one train key to search")
        for key, domain in self.space.items():
            check_domain(key, domain)

    @property
    def direction(self) -> str:
        return "min" if self.objective == "val_loss" else "max"


def check_domain(key: str, domain: Any) -> None:
    """A search domain is a list of train values or a numeric {min, max, log?, step?}."""
    import dataclasses

    from components.train.config import TrainConfig

    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    if key not in fields or key in NOT_TUNABLE:
        raise UserError(
            f"tune config space.{key}: not a train setting that can be searched; "
            f"use train keys such as {', '.join(DEFAULT_SPACE)}"
        )
    where = f"tune config space.{key}={domain!r} is invalid"
    if isinstance(domain, list):
        if not domain:
            raise UserError(f"{where}; expected a non-empty list of choices")
        for value in domain:  # each choice must be a valid train value (type and range)
            TrainConfig.from_dict({key: value})
        return
    if not isinstance(domain, dict) or not {"min", "max"} <= set(domain):
        raise UserError(f"{where}; expected a list of choices or a range {{min, max}}")
    extra = set(domain) - {"min", "max", "log", "step"}
    if extra:
        raise UserError(f"{where}; unknown range key {sorted(extra)[0]!r} (min, max, log, step)")
    low, high = domain["min"], domain["max"]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (low, high)):
        raise UserError(f"{where}; min and max must be numbers")
    if not low < high:
        raise UserError(f"{where}; expected min < max")
    if domain.get("log") and low <= 0:
        raise UserError(f"{where}; a log range needs min > 0")
    if fields[key].type not in ("int", "float", int, float):
        raise UserError(f"{where}; {key} is not numeric: give a list of choices")
    TrainConfig.from_dict({key: low})
    TrainConfig.from_dict({key: high})


def is_int(key: str) -> bool:
    import dataclasses

    from components.train.config import TrainConfig

    kind = {f.name: f.type for f in dataclasses.fields(TrainConfig)}[key]
    return kind in ("int", int)
