"""`visionpipe tune`: search train settings on a budget, with the same data, stages and
configs as `visionpipe run`.

Locally, KerasTuner drives the search (Bayesian optimisation, Hyperband or random) and
each trial is the real train stage (`components/train/core.run`) on the dataset prepared
once into `<output>/dataset`, scored on val (the test split is never read). A trial whose
preflight cannot overfit one batch scores 0 and the search moves on. KerasTuner's own
state lives in `<output>/tuner/`, so running the same command again after a kill goes on
where it stopped (the trial that was running is run again; its own train folder resumes).

What it leaves in `<output>`:
  trials.csv, trials.png    every trial: its values, epochs, score, status, seconds
  best.yaml                 the run config with the best trial's train values: accepted
                            as it is by `visionpipe run --config best.yaml`
  best_model/               the best trial's model folder
  tune.json                 the summary (objective, algorithm, best trial)

On a cluster, `visionpipe tune --katib` writes the same search as a Katib Experiment
(pipelines/katib.py).

A search composes two stages, so this package imports their entry points (prepare's
and train's config and run), as pipelines/ does; tests/test_layout.py allows exactly that.
"""

from __future__ import annotations

import csv
import json
import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from components.infra import progress
from components.infra.errors import UserError
from pipelines.tune.config import STAGE, TuneConfig, is_int


def hyperparameters(space: dict[str, Any]):
    """KerasTuner's HyperParameters for the space."""
    import keras_tuner as kt

    hp = kt.HyperParameters()
    for key, domain in space.items():
        if isinstance(domain, list):
            hp.Choice(key, domain)
        elif is_int(key):
            hp.Int(
                key,
                int(domain["min"]),
                int(domain["max"]),
                step=int(domain.get("step") or 1),
                sampling="log" if domain.get("log") else "linear",
            )
        else:
            hp.Float(
                key,
                float(domain["min"]),
                float(domain["max"]),
                step=domain.get("step"),
                sampling="log" if domain.get("log") else "linear",
            )
    return hp


def make_oracle(tune: TuneConfig, max_epochs: int):
    import keras_tuner as kt

    objective = kt.Objective(tune.objective, tune.direction)
    hp = hyperparameters(tune.space)
    if tune.algorithm == "hyperband":
        oracle = kt.oracles.HyperbandOracle(
            objective=objective,
            max_epochs=max_epochs,
            factor=tune.hyperband_factor,
            hyperparameters=hp,
            seed=tune.seed,
        )
        oracle.max_trials = tune.trials  # Oracle.create_trial stops the search there
        return oracle
    if tune.algorithm == "random":
        return kt.oracles.RandomSearchOracle(
            objective=objective, max_trials=tune.trials, hyperparameters=hp, seed=tune.seed
        )
    return kt.oracles.BayesianOptimizationOracle(
        objective=objective, max_trials=tune.trials, hyperparameters=hp, seed=tune.seed
    )


def trial_score(metrics: dict[str, Any]) -> tuple[dict[str, float], str]:
    """A trial's objectives: the mean over its cross-validation folds when it was
    cross-validated (one val split is a noisy judge on small data), else its val split."""
    found = metrics.get("cross_validation")
    if found:
        mean = found["mean"]
        scored = f"mean of {found['folds']} folds"
        return {"val_accuracy": mean["val_accuracy"], "val_loss": mean["val_loss"]}, scored
    return {"val_accuracy": metrics["val_accuracy"], "val_loss": metrics["val_loss"]}, "val"


def tuner_class():
    import keras_tuner as kt

    class TrainStageTuner(kt.engine.base_tuner.BaseTuner):
        """Each trial is the train stage on the prepared dataset, scored on val."""

        def __init__(self, oracle, *, dataset: Path, train: dict, tune: TuneConfig, **kwargs):
            super().__init__(oracle, **kwargs)
            self.dataset, self.train, self.tune = dataset, train, tune
            self.fatal: UserError | None = None

        def run_trial(self, trial, *args, **kwargs):
            from components.train.config import TrainConfig
            from components.train.core import run as train
            from components.train.preflight import PreflightFailed

            values = {k: trial.hyperparameters.get(k) for k in self.tune.space}
            epochs = int(trial.hyperparameters.values.get("tuner/epochs", self.max_epochs))
            folder = Path(self.get_trial_dir(trial.trial_id))
            started = time.time()
            progress.log(STAGE, f"trial {trial.trial_id}: {describe(values)}, {epochs} epoch(s)")
            info = {"values": values, "epochs": epochs, "status": "completed"}
            try:
                settings = {**self.train, **values, "epochs": epochs}
                if self.tune.cross_validate:
                    settings["cross_validate"] = self.tune.cross_validate
                metrics = train(TrainConfig.from_dict(settings), self.dataset, folder / "model")
                result, info["scored_on"] = trial_score(metrics)
                if "cross_validation" in metrics:
                    info["cross_validation_std"] = metrics["cross_validation"]["std"]
            except PreflightFailed as error:  # this setting cannot learn: the worst score
                info["status"] = "preflight failed"
                info["message"] = str(error)
                result = {"val_accuracy": 0.0, "val_loss": 1e9}
            except UserError as error:  # bad data or config: every trial would fail
                self.fatal = error
                raise kt.errors.FatalError(str(error)) from None
            info.update(result, seconds=round(time.time() - started, 2))
            (folder / "visionpipe_trial.json").write_text(json.dumps(info, indent=2))
            progress.log(
                STAGE,
                f"trial {trial.trial_id}: {self.tune.objective} "
                f"{result[self.tune.objective]:.4f} ({info['status']}, {info['seconds']:.0f} s)",
            )
            return result

        @property
        def max_epochs(self) -> int:
            return self.tune.max_epochs or int(self.train.get("epochs", 40))

        def save_model(self, trial_id, model, step=0):  # the train stage saves its own
            return None

        def load_model(self, trial):
            raise NotImplementedError("each trial's model is in its folder: trials/<id>/model")

    return TrainStageTuner


def describe(values: dict[str, Any]) -> str:
    return ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()
    )


def prepared_dataset(data: str, prepare_values: dict, output: Path) -> Path:
    """The dataset every trial trains on, prepared once (a complete earlier one is kept)."""
    from components.infra.artifacts import read_json
    from components.prepare.config import PrepareConfig
    from components.prepare.core import run as prepare

    folder = output / "dataset"
    if (folder / "config.json").exists() and (folder / "stats.json").exists():
        if read_json(folder / "stats.json").get("source") == data:
            progress.log(STAGE, f"using the dataset prepared earlier in {folder}")
            return folder
        raise UserError(
            f"{folder} holds a dataset prepared from another source; tune into a new --output"
        )
    prepare(PrepareConfig.from_dict(prepare_values), data, folder)
    return folder


def run(
    tune: TuneConfig, data: str, configs: dict[str, dict], output: str | Path
) -> dict[str, Any]:
    """Run the search `tune` over the train stage; `configs` are the validated whole-run
    sections (as `visionpipe run` takes them: prepare's and train's are the base)."""
    import keras_tuner as kt

    from components.train.config import TrainConfig

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    TrainConfig.from_dict(configs.get("train", {}))  # a bad base config fails before data
    dataset = prepared_dataset(data, configs.get("prepare", {}), output)
    max_epochs = tune.max_epochs or TrainConfig.from_dict(configs.get("train", {})).epochs
    tuner = tuner_class()(
        make_oracle(tune, max_epochs),
        dataset=dataset,
        train=configs.get("train", {}),
        tune=tune,
        directory=str(output),
        project_name="tuner",
        overwrite=False,
    )
    progress.log(
        STAGE,
        f"{tune.algorithm} search over {', '.join(tune.space)}: up to {tune.trials} trials of "
        f"up to {max_epochs} epoch(s), {tune.objective} "
        + (f"as the mean of {tune.cross_validate} folds" if tune.cross_validate else "on val"),
    )
    try:
        tuner.search(verbose=0)
    except kt.errors.FatalError:
        if tuner.fatal is not None:
            raise tuner.fatal from None
        raise
    return write_results(tuner, tune, configs, output)


def trial_rows(tuner, tune: TuneConfig) -> list[dict[str, Any]]:
    rows = []
    for trial_id, trial in sorted(tuner.oracle.trials.items()):
        info_path = Path(tuner.get_trial_dir(trial_id)) / "visionpipe_trial.json"
        info = json.loads(info_path.read_text()) if info_path.exists() else {}
        rows.append(
            {
                "trial": trial_id,
                **{k: trial.hyperparameters.values.get(k) for k in tune.space},
                "epochs": info.get("epochs"),
                tune.objective: trial.score,
                "status": info.get("status", str(trial.status).lower()),
                "scored_on": info.get("scored_on"),
                "seconds": info.get("seconds"),
            }
        )
    return rows


def write_results(tuner, tune: TuneConfig, configs: dict[str, dict], output: Path) -> dict:
    rows = trial_rows(tuner, tune)
    with open(output / "trials.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot_trials(rows, tune.objective, output / "trials.png")
    scored = [r for r in rows if r[tune.objective] is not None and r["status"] == "completed"]
    if not scored:
        raise UserError(
            f"no trial completed in {output} (trials.csv says why): every one failed its "
            "preflight or was cut short; widen tune.space (a learning rate near 1e-3) or "
            "check the data"
        )
    pick = min if tune.direction == "min" else max
    best = pick(scored, key=lambda r: r[tune.objective])
    best_train = {
        **configs.get("train", {}),
        **{k: best[k] for k in tune.space},
        "epochs": best["epochs"],
    }
    run_config = {name: dict(v) for name, v in configs.items() if v and name != "tune"}
    run_config["train"] = best_train
    (output / "best.yaml").write_text(
        f"# best of {len(rows)} trials ({tune.algorithm}, {tune.objective} "
        f"{best[tune.objective]:.4f}, {best['scored_on']}): visionpipe run --config best.yaml\n"
        + yaml.safe_dump(run_config, sort_keys=False)
    )
    best_model = output / "best_model"
    if best_model.exists():
        shutil.rmtree(best_model)
    shutil.copytree(Path(tuner.get_trial_dir(best["trial"])) / "model", best_model)
    summary = {
        "algorithm": tune.algorithm,
        "objective": tune.objective,
        "trials": len(rows),
        "best": best,
        "best_config": str(output / "best.yaml"),
        "best_model": str(best_model),
    }
    (output / "tune.json").write_text(json.dumps(summary, indent=2))
    progress.log(
        STAGE,
        f"best of {len(rows)} trials: {best['trial']} ({describe({k: best[k] for k in tune.space})})"
        f", {tune.objective} {best[tune.objective]:.4f} -> {output / 'best.yaml'}",
    )
    return summary


def plot_trials(rows: list[dict], objective: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    points = [(i + 1, r[objective]) for i, r in enumerate(rows) if r[objective] is not None]
    if points:
        ax.plot(*zip(*points, strict=True), "o", label="trial")
        best, running = [], None
        better = min if objective == "val_loss" else max
        for x, y in points:
            running = y if running is None else better(running, y)
            best.append((x, running))
        ax.plot(*zip(*best, strict=True), "-", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"{objective} (val)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
