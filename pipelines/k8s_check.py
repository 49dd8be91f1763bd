"""`make k8s-check`: render every kustomize overlay and validate what comes out.

    python -m pipelines.k8s_check [k8s/overlays/dev ...] [path/to/inferenceservice.yaml ...]

For each overlay: `kubectl kustomize` renders it (a rendering error fails the
check); every object is validated against the Kubernetes API schema as the
`kubernetes` Python client's models define it (unknown fields, wrong types,
missing required fields, at every depth); and the visionpipe configs inside
ConfigMaps (run.yaml, cluster.yaml) and the command the CronJob runs are
checked by visionpipe's own parsers.

The KServe InferenceService that `visionpipe push` writes beside each version is
validated against the InferenceService CRD's OpenAPI schema, and the Katib
Experiment that `visionpipe tune --katib` writes against Katib's v1beta1
swagger (unknown fields refused in both): the ones visionpipe would write for
each serving runtime / search algorithm, on CPU and GPU, and any such file
given as an argument (no kubectl needed for these). Exit 0 when all is valid, 2 with one line per problem
otherwise.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from pipelines.k8s_schema import model_for, validate

ROOT = Path(__file__).resolve().parent.parent


def render(overlay: Path) -> list[dict]:
    done = subprocess.run(
        ["kubectl", "kustomize", str(overlay)], capture_output=True, text=True, check=False
    )
    if done.returncode:
        raise ValueError(f"kubectl kustomize {overlay} failed: {done.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def check_visionpipe_parts(obj: dict, where: str) -> list[str]:
    """The configs in our ConfigMap and the CronJob's command, read by visionpipe itself."""
    from components.infra.errors import UserError
    from pipelines.cli import build_parser, run_configs
    from pipelines.cluster import load_cluster_settings

    problems = []
    if obj.get("kind") == "ConfigMap":
        for name, text in (obj.get("data") or {}).items():
            if not name.endswith(".yaml"):
                continue
            with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
                handle.write(text)
            try:
                if name == "cluster.yaml":
                    load_cluster_settings(handle.name)
                else:
                    run_configs(handle.name, [])
            except UserError as error:
                problems.append(f"{where} data.{name}: {error}")
            finally:
                Path(handle.name).unlink()
    if obj.get("kind") == "CronJob":
        pod = obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        for container in pod.get("containers", []):
            script = " ".join(container.get("command", [])[-1:])
            if "visionpipe" not in script:
                continue
            problems += check_stage_images(container, where)
            words = shlex.split(script.replace("exec ", "", 1))
            args = [w if not w.startswith("$") else "value" for w in words[1:]]
            try:
                build_parser().parse_args(args)
            except SystemExit:
                problems.append(f"{where}: the command {script!r} is not a valid visionpipe call")
    return problems


STAGE_IMAGE_ENV = ("VISIONPIPE_IMAGE", "VISIONPIPE_GPU_IMAGE")


def check_stage_images(container: dict, where: str) -> list[str]:
    """The submitting container must hand the pipeline both stage images, as image
    references kustomize's images: set (the CPU one is the container's own image)."""
    from pipelines.images import is_reference

    env = {e.get("name"): e.get("value") for e in container.get("env", [])}
    problems = []
    for name in STAGE_IMAGE_ENV:
        value = env.get(name)
        if not value:
            problems.append(
                f"{where}: the submit container has no {name}: the pipeline it compiles would "
                "run in the default image; set it (kustomize images: rewrites it)"
            )
        elif not is_reference(value):
            problems.append(f"{where}: {name}={value!r} is not an image reference")
    if env.get("VISIONPIPE_IMAGE") and env["VISIONPIPE_IMAGE"] != container.get("image"):
        problems.append(
            f"{where}: VISIONPIPE_IMAGE {env['VISIONPIPE_IMAGE']!r} is not the submitter's image "
            f"{container.get('image')!r}; set both with one kustomize images: entry"
        )
    return problems


def check_cluster_settings_leave_images_to_kustomize(obj: dict, where: str) -> list[str]:
    if obj.get("kind") != "ConfigMap" or "cluster.yaml" not in (obj.get("data") or {}):
        return []
    section = yaml.safe_load(obj["data"]["cluster.yaml"]) or {}
    section = section.get("kubernetes", section)
    return [
        f"{where} data.cluster.yaml: {key} is set; with k8s/ the images come from kustomize's "
        "images: (one place for the submitter and the stage tasks), remove it"
        for key in ("cpu_image", "gpu_image")
        if section.get(key)
    ]


def check(overlays: list[Path]) -> list[str]:
    problems: list[str] = []
    for overlay in overlays:
        try:
            objects = render(overlay)
        except ValueError as error:
            problems.append(str(error))
            continue
        for obj in objects:
            where = f"{overlay.name}: {obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
            problems += validate(obj, model_for(obj), where)
            problems += check_visionpipe_parts(obj, where)
            problems += check_cluster_settings_leave_images_to_kustomize(obj, where)
        print(f"k8s-check: {overlay}: {len(objects)} objects rendered and validated")
    return problems


def check_katib() -> list[str]:
    """The Katib Experiment `visionpipe tune --katib` writes, for each algorithm, GPU and CPU."""
    from pipelines import katib
    from pipelines.cluster import ClusterSettings

    problems: list[str] = []
    for algorithm in katib.ALGORITHMS:
        for gpus in (1, 0):
            settings = ClusterSettings.from_dict(
                {"gpu_count": gpus, "pipeline_root": "gs://CHANGE-ME/visionpipe"}
            )
            obj = katib.experiment({}, {"algorithm": algorithm}, settings)
            problems += katib.validate(obj, f"tune --katib algorithm={algorithm} gpus={gpus}")
    print(
        f"k8s-check: Katib Experiment for tune.algorithm={'/'.join(katib.ALGORITHMS)} "
        "(GPU, CPU) validated against Katib's v1beta1 schema"
    )
    return problems


def check_files(files: list[Path]) -> list[str]:
    """Published InferenceService and written Experiment files, by their kind."""
    from components.push import serving
    from pipelines import katib

    problems: list[str] = []
    for path in files:
        for i, doc in enumerate(yaml.safe_load_all(path.read_text())):
            where = f"{path}[{i}]"
            kind = doc.get("kind") if isinstance(doc, dict) else None
            if kind == "InferenceService":
                problems += serving.validate(doc, where)
            elif kind == "Experiment":
                problems += katib.validate(doc, where)
            elif doc is not None:
                problems.append(f"{where}: expected an InferenceService or a Katib Experiment")
    return problems


def check_serving(files: list[Path]) -> list[str]:
    """The InferenceService push writes (each runtime, CPU and GPU), and published files."""
    from components.push import serving
    from components.push.config import PushConfig

    problems: list[str] = []
    target = "gs://CHANGE-ME/models/visionpipe-classifier/VERSION"
    for runtime in serving.RUNTIME:
        for gpus in (0, 1):
            config = PushConfig(
                serving=runtime,
                serving_gpus=gpus,
                serving_runtime_version="2.6.2-gpu" if runtime == "tensorflow" and gpus else "",
            )
            service = serving.service_for(config, target, "VERSION")
            problems += serving.validate(service, f"push.serving={runtime} gpus={gpus}")
    problems += check_files(files)
    print(
        f"k8s-check: InferenceService for push.serving={'/'.join(serving.RUNTIME)} "
        f"(CPU, GPU) and {len(files)} published file(s) validated against KServe's schema"
    )
    return problems


def check_compiled() -> list[str]:
    """The compiled pipeline as the KFP API server parses it (pipelines/backend.py): the
    default, the prepare fan-out, and each overlay's cluster file."""
    import tempfile as scratch

    from pipelines import backend
    from pipelines.cluster import ClusterSettings, load_cluster_settings
    from pipelines.pipeline import compile_pipeline

    variants = [("default", ClusterSettings(), 1), ("fan-out x3", ClusterSettings(), 3)]
    for overlay in sorted((ROOT / "k8s" / "overlays").iterdir()):
        cluster = overlay / "cluster.yaml"
        if cluster.is_file():
            variants.append(
                (f"{overlay.name} cluster.yaml", load_cluster_settings(str(cluster)), 1)
            )
    problems: list[str] = []
    with scratch.TemporaryDirectory() as folder:
        for name, settings, parallelism in variants:
            path = compile_pipeline(f"{folder}/p.yaml", settings, parallelism)
            text = Path(path).read_text()
            problems += [f"compiled ({name}): {p}" for p in backend.validate_package(text)]
            print(
                f"k8s-check: compiled pipeline ({name}): {len(text.encode()):,} bytes, parsed "
                "strictly as the API server does (pipeline spec, platform spec, schema, name)"
            )
    return problems


def main(argv: list[str] | None = None) -> int:
    from components.infra.cli import quiet_tensorflow

    quiet_tensorflow()  # the config checks import Keras
    names = argv if argv is not None else sys.argv[1:]
    files = [Path(n) for n in names if Path(n).is_file()]
    overlays = [Path(n) for n in names if not Path(n).is_file()]
    if not names:
        overlays = sorted((ROOT / "k8s" / "overlays").iterdir())
    problems = check_serving(files) + check_katib() + check(overlays)
    if not names:
        problems += check_compiled()
    for problem in problems:
        print(f"k8s-check: {problem}", file=sys.stderr)
    return 2 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
