"""The visionpipe DAG: prepare -> train -> evaluate -> [blessed?] -> export.

No `from __future__ import annotations` here or in components.py: KFP reads the
annotations at definition time and needs real types, not strings.
"""

from kfp import dsl

from pipelines import components as c

PIPELINE_NAME = "visionpipe"


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
    prepare_task = c.prepare(data=data, config=prepare_config).set_display_name("prepare")
    prepare_task.set_cpu_limit("2").set_memory_limit("4G")

    train_task = c.train(dataset=prepare_task.outputs["dataset"], config=train_config)
    train_task.set_display_name("train").set_caching_options(False)
    train_task.set_cpu_limit("8").set_memory_limit("32G")
    train_task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit("1")

    evaluate_task = c.evaluate(
        dataset=prepare_task.outputs["dataset"],
        model=train_task.outputs["model"],
        config=evaluate_config,
    )
    evaluate_task.set_display_name("evaluate").set_caching_options(False)
    evaluate_task.set_cpu_limit("2").set_memory_limit("8G")

    # a single bool return is named "Output"; kfp.local resolves the condition by that name
    with dsl.If(evaluate_task.outputs["Output"] == True, name="blessed"):  # noqa: E712
        export_task = c.export(
            dataset=prepare_task.outputs["dataset"],
            model=train_task.outputs["model"],
            config=export_config,
        )
        export_task.set_display_name("export").set_caching_options(False)
        export_task.set_cpu_limit("2").set_memory_limit("8G")

        push_task = c.push(
            exported=export_task.outputs["exported"],
            evaluation=evaluate_task.outputs["evaluation"],
            config=push_config,
        )
        push_task.set_display_name("push").set_caching_options(False)
        push_task.set_cpu_limit("1").set_memory_limit("2G")


def compile_pipeline(path: str) -> str:
    from pathlib import Path

    from kfp import compiler

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(visionpipe_pipeline, package_path=path)
    return path
