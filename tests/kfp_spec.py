"""Reading a compiled pipeline spec the way the KFP backend walks it: tasks inside
conditions (`comp-condition-N` sub-DAGs) and parameters passed through them."""

from __future__ import annotations


def sub_dags(spec: dict) -> dict[str, dict]:
    """The DAG of the root and of every condition component, by component name."""
    found = {"root": spec["root"]["dag"]["tasks"]}
    for name, component in spec["components"].items():
        if "dag" in component:
            found[name] = component["dag"]["tasks"]
    return found


def all_tasks(spec: dict) -> dict[str, dict]:
    """Every task that runs a stage (conditions left out), wherever it sits."""
    return {
        name: task
        for tasks in sub_dags(spec).values()
        for name, task in tasks.items()
        if not task["componentRef"]["name"].startswith("comp-condition")
    }


def runner_of(spec: dict, task_name: str) -> tuple[str, dict] | None:
    """(name, task) of the condition task whose sub-DAG holds `task_name`; None at the root."""
    dags = sub_dags(spec)
    holder = next(name for name, tasks in dags.items() if task_name in tasks)
    for tasks in dags.values():
        for name, task in tasks.items():
            if task["componentRef"]["name"] == holder:
                return name, task
    return None


def producer(spec: dict, task_name: str, parameter: str) -> dict:
    """The taskOutputParameter a task's parameter comes from, through any conditions."""
    dags = sub_dags(spec)
    task = next(tasks[task_name] for tasks in dags.values() if task_name in tasks)
    source = task["inputs"]["parameters"][parameter]
    while "componentInputParameter" in source:
        found = runner_of(spec, task_name)
        if found is None:
            return source  # a pipeline parameter
        task_name, runner = found
        source = runner["inputs"]["parameters"][source["componentInputParameter"]]
    return source["taskOutputParameter"]
