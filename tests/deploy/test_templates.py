"""The deploy/ templates, validated offline through Dagster's own config schemas: the run launchers build from
the templates' instance config, the pod dagster-k8s builds for a GPU step asks for the GPU on GPU nodes, the
ECS overrides of a GPU run carry it, and every template uses the names of viscon_dagster/gpu.py.
No cluster runs here: the Kubernetes API is never called (a kubeconfig for an unused loopback address)."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest
import yaml

from viscon_dagster import gpu

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: offline, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: offline, user: {token: unused}}]
contexts: [{name: offline, context: {cluster: offline, user: offline, namespace: viscon}}]
current-context: offline
"""


def load(name: str):
    return yaml.safe_load((DEPLOY / name).read_text())


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(w.title() for w in rest)


@pytest.fixture
def k8s_launcher(tmp_path):
    """The K8sRunLauncher of deploy/helm/values.yaml's `runLauncher` (the keys the chart passes through: its
    runK8sConfig, envSecrets, imagePullPolicy); the chart itself renders it in test_rendered.py where the chart is
    at hand. A kubeconfig for an unused loopback address stands in for the in-cluster config."""
    pytest.importorskip("dagster_k8s", reason="dagster-k8s is in the [dev] and [deploy] extras")
    from dagster_k8s import K8sRunLauncher

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG)
    values = load("helm/values.yaml")
    k8s = values["runLauncher"]["config"]["k8sRunLauncher"]
    return K8sRunLauncher(
        service_account_name=values["global"]["serviceAccountName"], instance_config_map="viscon-dagster-instance",
        dagster_home="/opt/dagster/dagster_home", job_namespace="viscon", load_incluster_config=False,
        kubeconfig_file=str(kubeconfig), image_pull_policy=k8s["imagePullPolicy"],
        env_secrets=[s["name"] for s in k8s["envSecrets"]],
        run_k8s_config={"container_config": k8s["runK8sConfig"]["containerConfig"]})


def gpu_step_tags() -> dict:
    from viscon_dagster.definitions import defs

    captions = next(a for a in defs.assets if isinstance(a, dg.AssetsDefinition)
                    and dg.AssetKey("captions") in a.keys)
    return dict(captions.op.tags)


def test_a_gpu_step_pod_asks_for_a_gpu_on_gpu_nodes(k8s_launcher):
    """The pod k8s_job_executor builds for the captions step: run launcher config, then the step's
    `dagster-k8s/config` op tag (as dagster_k8s.executor.K8sStepHandler merges them)."""
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import construct_dagster_k8s_job, get_user_defined_k8s_config

    run = dg.DagsterRun(job_name="__ASSET_JOB", run_id="0123abcd-0000-0000-0000-000000000000")
    context = K8sContainerContext.create_for_run(run, k8s_launcher, include_run_tags=False)
    context = context.merge(K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(gpu_step_tags())))
    job_config = context.get_k8s_job_config("registry.example.com/viscon-dagster-gpu:0.1.0",
                                            k8s_launcher)
    job = construct_dagster_k8s_job(job_config, ["dagster", "api", "execute_step"], "dagster-step-captions",
                                    user_defined_k8s_config=context.run_k8s_config, component="step_worker")
    pod = job.spec.template.spec
    (container,) = pod.containers
    assert container.resources.limits[gpu.K8S_GPU_RESOURCE] == "1"
    assert container.resources.requests[gpu.K8S_GPU_RESOURCE] == "1"
    assert container.resources.requests["cpu"] == "1"  # the run launcher's runK8sConfig kept
    assert pod.node_selector == gpu.K8S_GPU_NODE_SELECTOR
    assert [t.to_dict() | {"toleration_seconds": None} for t in pod.tolerations] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule", "value": None,
         "toleration_seconds": None}]
    assert {e.secret_ref.name for e in container.env_from if e.secret_ref} == {"viscon-secrets"}

    cpu_context = K8sContainerContext.create_for_run(run, k8s_launcher, include_run_tags=False)
    cpu_pod = construct_dagster_k8s_job(cpu_context.get_k8s_job_config("img:1", k8s_launcher),
                                        ["dagster"], "dagster-step-docs", component="step_worker",
                                        user_defined_k8s_config=cpu_context.run_k8s_config).spec.template.spec
    assert gpu.K8S_GPU_RESOURCE not in (cpu_pod.containers[0].resources.limits or {})  # CPU steps: no GPU


@pytest.mark.slow
def test_the_ecs_run_launcher_builds_from_the_template_and_gpu_runs_get_a_gpu(tmp_path, monkeypatch, s3_server):
    """The launcher looks its task definition up when it starts: ECS is moto's server on loopback, holding
    deploy/ecs's two task definitions."""
    import boto3
    from dagster_aws.ecs import EcsRunLauncher

    for var, value in [("AWS_DEFAULT_REGION", "us-east-1"), ("AWS_ACCESS_KEY_ID", "testing"),
                       ("AWS_SECRET_ACCESS_KEY", "testing"), ("AWS_ENDPOINT_URL", s3_server)]:
        monkeypatch.setenv(var, value)
    ecs = boto3.client("ecs")
    for name in ["cpu", "gpu"]:
        ecs.register_task_definition(**json.loads((DEPLOY / f"ecs/{name}-task-definition.json").read_text()))
    config = load("ecs/dagster.yaml")
    del config["storage"]  # Postgres: deploy/dagster.yaml's, tested on a real server in tests/postgres
    home = tmp_path / "ecs_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        launcher = instance.run_launcher
        assert isinstance(launcher, EcsRunLauncher)
        assert launcher.task_definition.endswith(":task-definition/viscon-cpu-run:1")  # looked up on ECS
        assert launcher.container_name == "run"
        assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] == 300  # pool slots come back
        # a GPU asset's run: its run tags route nothing (the run's worker and CPU steps stay on Fargate)
        gpu_run = dg.DagsterRun(job_name="__ASSET_JOB", tags=gpu.gpu_run_tags())
        assert launcher._get_container_overrides(gpu_run) == {}
        assert launcher._get_run_task_kwargs_from_run(gpu_run) == {}
        assert "launchType" not in launcher.run_task_kwargs  # see test_a_gpu_steps_ecs_task_asks_for_a_gpu


def ecs_step_kwargs(step_tags: dict) -> dict:
    """What dagster_aws.ecs.executor.EcsStepHandler merges into RunTask for a step: the launcher's run_task_kwargs,
    then the step's `ecs/run_task_kwargs` tag (its _get_run_task_kwargs); `ecs/container_overrides` goes into the
    run container's overrides (its _get_container_overrides)."""
    config = load("ecs/dagster.yaml")["run_launcher"]["config"]
    kwargs = {"taskDefinition": config["task_definition"], **config["run_task_kwargs"]}
    if step_tags.get(gpu.ECS_RUN_TASK_KWARGS_TAG):
        kwargs = {**kwargs, **json.loads(step_tags[gpu.ECS_RUN_TASK_KWARGS_TAG])}
    overrides = json.loads(step_tags.get(gpu.ECS_CONTAINER_OVERRIDES_TAG) or "{}")
    kwargs["overrides"] = {"containerOverrides": [{"name": config["container_name"], "command": ["dagster", "api"],
                                                   **overrides}]}
    return kwargs


def test_a_gpu_steps_ecs_task_asks_for_a_gpu_and_a_cpu_step_does_not():
    """Under VISCON_EXECUTOR=ecs each step is a task: the captions step's on the GPU task definition and capacity
    provider with one GPU, a CPU step's on Fargate; RunTask's own input shape (botocore) accepts both (it refuses
    launchType beside a capacityProviderStrategy, hence no launchType in the template)."""
    from botocore.session import get_session
    from botocore.validate import ParamValidator

    shape = get_session().get_service_model("ecs").operation_model("RunTask").input_shape
    gpu_kwargs = ecs_step_kwargs(gpu_step_tags())
    assert gpu_kwargs["taskDefinition"] == gpu.ECS_GPU_TASK_DEFINITION
    assert gpu_kwargs["capacityProviderStrategy"] == [{"capacityProvider": gpu.ECS_GPU_CAPACITY_PROVIDER, "weight": 1}]
    container = gpu_kwargs["overrides"]["containerOverrides"][0]
    assert container["resourceRequirements"] == [{"type": "GPU", "value": "1"}]
    cpu_kwargs = ecs_step_kwargs({})
    assert cpu_kwargs["taskDefinition"] == "viscon-cpu-run"
    assert cpu_kwargs["capacityProviderStrategy"][0]["capacityProvider"] == "FARGATE"
    assert "resourceRequirements" not in cpu_kwargs["overrides"]["containerOverrides"][0]
    for kwargs in (gpu_kwargs, cpu_kwargs):
        report = ParamValidator().validate(kwargs, shape)
        assert not report.has_errors(), report.generate_report()
        assert not ("launchType" in kwargs and "capacityProviderStrategy" in kwargs)


def test_the_ecs_executor_is_chosen_by_the_environment(monkeypatch):
    from viscon_dagster.environment import executor_from_env

    monkeypatch.setenv("VISCON_EXECUTOR", "ecs")
    assert executor_from_env().name == "ecs"
    env = {e.split("=")[0]: e.partition("=")[2] for e in
           load("ecs/dagster.yaml")["run_launcher"]["config"]["env_vars"]}
    assert env["VISCON_EXECUTOR"] == "ecs"  # the ECS template's runs launch their steps as tasks


def test_the_production_instance_gives_back_the_pool_slots_of_ended_runs(tmp_path):
    config = load("dagster.yaml")
    del config["storage"]  # Postgres: tested on a real server in tests/postgres
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(config))
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] == 300


def test_templates_and_code_agree_on_gpu_names():
    gpu_task = json.loads((DEPLOY / "ecs/gpu-task-definition.json").read_text())
    assert gpu_task["family"] == gpu.ECS_GPU_TASK_DEFINITION and gpu_task["requiresCompatibilities"] == ["EC2"]
    (container,) = gpu_task["containerDefinitions"]
    assert container["name"] == load("ecs/dagster.yaml")["run_launcher"]["config"]["container_name"]
    assert container["resourceRequirements"] == gpu.ECS_GPU_CONTAINER_OVERRIDES["resourceRequirements"]
    deployment, service = yaml.safe_load_all((DEPLOY / "k8s/vllm-serve.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == gpu.K8S_GPU_NODE_SELECTOR and pod["tolerations"] == gpu.K8S_GPU_TOLERATIONS
    assert pod["containers"][0]["resources"]["limits"][gpu.K8S_GPU_RESOURCE] == "1"
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    vllm_pin = next(line for line in (DEPLOY.parent / "constraints-gpu.txt").read_text().splitlines()
                    if line.startswith("vllm=="))
    assert pod["containers"][0]["image"] == f"vllm/vllm-openai:v{vllm_pin.split('==')[1]}"


def test_every_template_holds_the_one_instance_policy():
    """deploy/dagster.yaml, deploy/ecs/dagster.yaml and the Helm values carry instance_policy's run queue and run
    monitoring at its PRODUCTION sizes, name no `pools.default_limit` (it caps every pool), and each deployment
    sets the `gpu` pool's limit in the database to PRODUCTION.gpus."""
    from viscon_dagster.instance_policy import PRODUCTION, concurrency, run_monitoring

    for path in ["dagster.yaml", "ecs/dagster.yaml"]:
        config = load(path)
        assert config["concurrency"] == concurrency(PRODUCTION), path
        assert config["run_monitoring"] == run_monitoring(PRODUCTION), path
    values = load("helm/values.yaml")
    runs = concurrency(PRODUCTION)["runs"]
    assert values["concurrency"] == {"runs": {camel(k): v for k, v in runs.items()}}  # no pools
    assert values["dagsterDaemon"]["runMonitoring"] == {camel(k): v for k, v in run_monitoring(PRODUCTION).items()}
    assert values["dagsterDaemon"]["runCoordinator"]["type"] == "QueuedRunCoordinator"

    job = load("k8s/gpu-pool-limit-job.yaml")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["dagster", "instance", "concurrency", "set", gpu.GPU_POOL, str(PRODUCTION.gpus)]
    daemon = json.loads((DEPLOY / "ecs/daemon-task-definition.json").read_text())["containerDefinitions"][0]
    assert f'dagster instance concurrency set {gpu.GPU_POOL} "$VISCON_GPU_POOL_LIMIT" && exec dagster-daemon run' \
        in daemon["command"][-1]
    assert {"name": "VISCON_GPU_POOL_LIMIT", "value": str(PRODUCTION.gpus)} in daemon["environment"]
