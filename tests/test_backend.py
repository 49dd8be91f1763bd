"""The KFP backends visionpipe runs on: a declared backend that cannot run a setting is
refused at compile time with one line, and the compiled YAML is parsed the way the API
server parses it (no server runs here: the same protobuf messages and checks)."""

from __future__ import annotations

import yaml

from pipelines import backend
from pipelines.cli import main


def cluster_file(tmp_path, **kubernetes):
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump({"kubernetes": kubernetes}))
    return str(path)


def test_a_fan_out_on_a_backend_older_than_collected_artifacts_is_refused(tmp_path, capsys):
    out = str(tmp_path / "p.yaml")
    old = cluster_file(tmp_path, kfp_version="2.5.0")
    assert main(["compile", "--output", out, "--prepare-parallelism", "3", "--cluster", old]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "prepare.parallelism=3 needs KFP backend 2.14.0 or newer" in err
    assert "kubeflow/pipelines#11725" in err and "kfp_version=2.5.0" in err
    assert not (tmp_path / "p.yaml").exists()
    new = cluster_file(tmp_path, kfp_version="2.15.0")
    assert main(["compile", "--output", out, "--prepare-parallelism", "3", "--cluster", new]) == 0


def test_an_old_backend_runs_the_default_pipeline_and_says_what_it_lacks(tmp_path, capsys):
    out = str(tmp_path / "p.yaml")
    assert (
        main(["compile", "--output", out, "--cluster", cluster_file(tmp_path, kfp_version="2.5.0")])
        == 0
    )
    err = capsys.readouterr().err
    assert "warning: KFP backend 2.5.0 does not retry tasks inside a condition" in err
    assert main(["compile", "--output", out]) == 0  # the default backend: no warning
    assert "warning" not in capsys.readouterr().err


def test_security_context_needs_its_backend_and_old_backends_are_refused(tmp_path, capsys):
    out = str(tmp_path / "p.yaml")
    asked = cluster_file(tmp_path, kfp_version="2.15.0", task_run_as_user=10001)
    assert main(["compile", "--output", out, "--cluster", asked]) == 2
    assert "task_run_as_user=10001 needs KFP backend 2.16.0" in capsys.readouterr().err
    ancient = cluster_file(tmp_path, kfp_version="2.4.1")
    assert main(["compile", "--output", out, "--cluster", ancient]) == 2
    assert "needs KFP backend 2.5.0 (Kubeflow 1.10.1) or newer" in capsys.readouterr().err
    assert (
        main(["compile", "--output", out, "--cluster", cluster_file(tmp_path, kfp_version="x")])
        == 2
    )


def test_the_compiled_pipeline_parses_as_the_api_server_parses_it(tmp_path):
    from pipelines.pipeline import compile_pipeline

    text = open(compile_pipeline(str(tmp_path / "p.yaml"), prepare_parallelism=3)).read()
    assert backend.validate_package(text) == []
    spec, platform = list(yaml.safe_load_all(text))
    spec["root"]["dag"]["tasks"]["changes"]["bogus"] = 1
    spec["schemaVersion"] = "2.0.0"
    spec["pipelineInfo"]["name"] = "Vision_Pipe"
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    next(iter(executors.values()))["nodeSelectr"] = {}
    problems = "\n".join(backend.validate_package(yaml.safe_dump_all([spec, platform])))
    assert "invalid v2 pipeline spec" in problems and "bogus" in problems
    assert "schema version '2.0.0'" in problems
    assert "pipeline name 'Vision_Pipe'" in problems
    assert "invalid Kubernetes config" in problems and "nodeSelectr" in problems
    huge = text + "\n# " + "x" * backend.MAX_SPEC_BYTES
    assert any("etcd" in p for p in backend.validate_package(huge))


def test_the_feature_table_is_in_the_docs():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "cluster.md").read_text()
    for found in backend.FEATURES:
        assert found.source in text and found.since in text, found.name
    for kubeflow, kfp in backend.KUBEFLOW_RELEASES.items():
        assert f"| {kubeflow} | {kfp} |" in text
