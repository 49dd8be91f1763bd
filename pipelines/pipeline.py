"""The visionpipe DAG: prepare -> train -> evaluate -> [blessed?] -> export.

No `from __future__ import annotations` here or in components.py: KFP reads the
annotations at definition time and needs real types, not strings.
"""

from kfp import dsl

from pipelines import components as c

PIPELINE_NAME = "visionpipe"


# (cpu, memory) limits per task; training also gets one GPU
RESOURCES = {
    "prepare": ("2", "4G"),
    "train": ("8", "32G"),
    "evaluate": ("2", "8G"),
    "export": ("2", "8G"),
    "push": ("1", "2G"),
}


def configure(task, name: str, cache: bool = False):
    """Display name, resources and caching of one task (only prepare is worth caching)."""
    cpu, memory = RESOURCES[name]
    task.set_display_name(name).set_caching_options(cache)
    task.set_cpu_limit(cpu).set_memory_limit(memory)
    return task


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="Labelled images in; a verified, exported image classifier out.",
)
def visionpipe_pipeline(
    data: str = "builtin:digits",
    prepare_config: dict = {},
    train_config: dict = {},
    evaluate_config: dict = {},
    export_config: dict = {},
    push_config: dict = {},
):
    prepare_task = configure(c.prepare(data=data, config=prepare_config), "prepare", cache=True)
    dataset = prepare_task.outputs["dataset"]
    train_task = configure(c.train(dataset=dataset, config=train_config), "train")
    train_task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit("1")
    model = train_task.outputs["model"]
    evaluate_task = configure(
        c.evaluate(dataset=dataset, model=model, config=evaluate_config), "evaluate"
    )
    # a single bool return is named "Output"; kfp.local resolves the condition by that name
    with dsl.If(evaluate_task.outputs["Output"] == True, name="blessed"):  # noqa: E712
        export_task = configure(
            c.export(dataset=dataset, model=model, config=export_config), "export"
        )
        configure(
            c.push(
                exported=export_task.outputs["exported"],
                evaluation=evaluate_task.outputs["evaluation"],
                config=push_config,
            ),
            "push",
        )


def compile_pipeline(path: str) -> str:
    from pathlib import Path

    from kfp import compiler

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(visionpipe_pipeline, package_path=path)
    return path
