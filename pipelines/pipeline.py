"""The visionpipe DAG: fingerprint -> changes -> [changed?] -> prepare -> validate -> train ->
evaluate -> [blessed?] -> export -> push.

`changes` (uncached) compares tonight's data fingerprint and resolved configs with the
deployed version's (pipelines/runkey.py): unchanged, and every task after it
is skipped by the DAG, on a cluster as with kfp.local, so a moved `latest` is never
answered from a stale cache (only prepare is cached, on the fingerprint).

No `from __future__ import annotations` here or in components.py: KFP reads the
annotations at definition time and needs real types, not strings.
"""

from kfp import dsl

from components.infra.stages import STAGES, TASKS
from pipelines import components
from pipelines.cluster import ClusterSettings, apply_task_settings, images_for

PIPELINE_NAME = "visionpipe"


# (cpu, memory) limits per task; training also gets one GPU
RESOURCES = {
    "fingerprint": ("1", "1G"),
    "changes": ("1", "1G"),
    "prepare": ("2", "4G"),
    "validate": ("2", "8G"),
    "train": ("8", "32G"),
    "evaluate": ("2", "8G"),
    "export": ("2", "8G"),
    "push": ("1", "2G"),
}


assert tuple(RESOURCES) == TASKS, "every task has its resources, in DAG order"


def configure(
    task, name: str, settings: ClusterSettings | None, cache: bool = False, display: str = ""
):
    """Display name, resources, caching and, when compiling for a cluster, the kfp-kubernetes
    settings and retries of one task (only prepare is worth caching). `name` is the stage
    whose resources the task gets; `display` its own name where it differs (fan-out)."""
    cluster = settings or ClusterSettings()  # kfp.local: the defaults, without kfp-kubernetes
    override = cluster.resources.get(name, {})
    cpu, memory = RESOURCES[name]
    cpu, memory = str(override.get("cpu", cpu)), str(override.get("memory", memory))
    task.set_display_name(display or name).set_caching_options(cache)
    task.set_cpu_limit(cpu).set_memory_limit(memory)
    if name in cluster.gpu_tasks and cluster.gpu_count:
        task.set_accelerator_type(cluster.gpu_resource)
        task.set_accelerator_limit(str(cluster.gpu_count))
    if settings is not None:
        apply_task_settings(task, name, settings)
    return task


def make_pipeline(settings: ClusterSettings | None = None, prepare_parallelism: int = 1):
    """The pipeline function; KFP builds its graph right here, at decoration time.

    settings: cluster settings to bake in (None for kfp.local runs, which ignore them).
    prepare_parallelism: prepare.parallelism; above 1 prepare is a fan-out of that many
    scan and encode tasks around one plan task (components/prepare/fanout.py).
    The stage images are resolved now (pipelines/images.py), not at import time.
    """
    cluster = settings or ClusterSettings()
    images = images_for(cluster)
    c = components.build(images, cluster.gpu_count, tuple(cluster.gpu_tasks))

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Labelled images in; a verified, exported image classifier out.",
        pipeline_root=(settings.pipeline_root or None) if settings else None,
    )
    def visionpipe_pipeline(
        data: str = "builtin:digits",
        prepare_config: dict = {},
        validate_config: dict = {},
        train_config: dict = {},
        evaluate_config: dict = {},
        export_config: dict = {},
        push_config: dict = {},
        tracking_config: dict = {},
    ):
        # never cached: it looks at the source as it is now, on every run from any path
        # (UI, submit, recurring run, CronJob, visionpipe run)
        fingerprint_task = configure(c.fingerprint(data=data), "fingerprint", settings)
        # never cached either: the deployed version it compares with moves
        changes_task = configure(
            c.changes(
                data_fingerprint=fingerprint_task.output,
                prepare_config=prepare_config,
                validate_config=validate_config,
                train_config=train_config,
                evaluate_config=evaluate_config,
                export_config=export_config,
                push_config=push_config,
                tracking_config=tracking_config,
                kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            ),
            "changes",
            settings,
        )
        with dsl.If(changes_task.outputs["Output"] == "changed", name="changed"):
            given = (
                prepare_config,
                validate_config,
                train_config,
                evaluate_config,
                export_config,
                push_config,
            )
            configs = dict(zip(STAGES, given, strict=True))
            stages(
                c,
                settings,
                prepare_parallelism,
                changes_task,
                fingerprint_task.output,
                data,
                configs,
            )

    return visionpipe_pipeline


def stages(c, settings, prepare_parallelism, changes_task, fingerprint, data, configs):
    """prepare -> validate -> train -> evaluate -> [blessed?] -> export -> push; `configs`
    holds each stage's config parameter."""
    prepare_config, validate_config = configs["prepare"], configs["validate"]
    train_config, evaluate_config = configs["train"], configs["evaluate"]
    export_config, push_config = configs["export"], configs["push"]
    # cached on its inputs, the fingerprint among them: new data re-prepares, the same
    # data reuses the dataset
    if prepare_parallelism > 1:
        dataset = prepare_fanout(
            c, data, prepare_config, fingerprint, prepare_parallelism, settings
        )
    else:
        prepare_task = configure(
            c.prepare(data=data, config=prepare_config, fingerprint=fingerprint),
            "prepare",
            settings,
            cache=True,
        )
        dataset = prepare_task.outputs["dataset"]
    # its own task, so the UI shows it; it fails the run on anomalies (on_anomaly=stop)
    validate_task = configure(
        c.validate(
            dataset=dataset, config=validate_config, changes=changes_task.outputs["decision"]
        ),
        "validate",
        settings,
    )
    decision = changes_task.outputs["decision"]
    train_task = configure(
        c.train(dataset=dataset, config=train_config, changes=decision), "train", settings
    )
    train_task.after(validate_task)
    model = train_task.outputs["model"]
    evaluate_task = configure(
        c.evaluate(dataset=dataset, model=model, config=evaluate_config, changes=decision),
        "evaluate",
        settings,
    )
    evaluation = evaluate_task.outputs["evaluation"]
    # a single bool return is named "Output"; kfp.local resolves the condition by that name
    with dsl.If(evaluate_task.outputs["Output"] == True, name="blessed"):  # noqa: E712
        export_task = configure(
            c.export(
                dataset=dataset,
                model=model,
                evaluation=evaluation,
                config=export_config,
                changes=decision,
            ),
            "export",
            settings,
        )
        configure(
            c.push(
                exported=export_task.outputs["exported"],
                evaluation=evaluation,
                model=model,
                dataset=dataset,
                config=push_config,
                changes=changes_task.outputs["decision"],
            ),
            "push",
            settings,
        )


def prepare_fanout(c, data, config, fingerprint, n: int, settings):
    """scan x n -> plan -> encode x n -> merge; the merged dataset (what prepare outputs)."""
    shards = list(range(n))
    with dsl.ParallelFor(items=shards, parallelism=n, name="prepare-scans") as shard:
        scan_task = configure(
            c.prepare_scan(
                data=data, config=config, fingerprint=fingerprint, shard=shard, shards=n
            ),
            "prepare",
            settings,
            cache=True,
            display="prepare-scan",
        )
    plan_task = configure(
        c.prepare_plan(data=data, config=config, scans=dsl.Collected(scan_task.outputs["scan"])),
        "prepare",
        settings,
        cache=True,
        display="prepare-plan",
    )
    with dsl.ParallelFor(items=shards, parallelism=n, name="prepare-encodes") as worker:
        encode_task = configure(
            c.prepare_encode(
                config=config, plan=plan_task.outputs["plan"], worker=worker, workers=n
            ),
            "prepare",
            settings,
            cache=True,
            display="prepare-encode",
        )
    merge_task = configure(
        c.prepare_merge(
            data=data,
            config=config,
            plan=plan_task.outputs["plan"],
            encoded=dsl.Collected(encode_task.outputs["records"]),
        ),
        "prepare",
        settings,
        cache=True,
        display="prepare",
    )
    return merge_task.outputs["dataset"]


def compile_pipeline(
    path: str, settings: ClusterSettings | None = None, prepare_parallelism: int = 1
) -> str:
    """Write the pipeline YAML with the cluster `settings` (defaults when None)."""
    from pathlib import Path

    from kfp import compiler

    from components.infra import progress
    from pipelines import backend

    settings = settings or ClusterSettings()
    for warning in backend.check(settings, prepare_parallelism):  # refuses what it cannot run
        progress.log("compile", f"warning: {warning}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    pipeline = make_pipeline(settings, prepare_parallelism)
    compiler.Compiler().compile(pipeline, package_path=path)
    return path
