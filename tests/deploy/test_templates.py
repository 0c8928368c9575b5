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


def helm_instance(values: dict, kubeconfig: Path) -> dict:
    """The dagster.yaml Dagster's chart renders from the values we set (its templates'
    helpers/instance/_run-launcher.tpl, _concurrency.tpl and configmap-instance.yaml, for these keys only);
    in-cluster config is swapped for a kubeconfig since no cluster runs here. Storage stays SQLite: the
    Postgres part is deploy/dagster.yaml's, tested on a real server in tests/postgres."""
    k8s = values["runLauncher"]["config"]["k8sRunLauncher"]
    daemon = values["dagsterDaemon"]
    runs, pools = values["concurrency"]["runs"], values["concurrency"]["pools"]
    s3_logs = values["computeLogManager"]["config"]["s3ComputeLogManager"]
    return {
        "run_launcher": {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": {
            "load_incluster_config": False, "kubeconfig_file": str(kubeconfig), "job_namespace": "viscon",
            "image_pull_policy": k8s["imagePullPolicy"], "service_account_name": values["global"]["serviceAccountName"],
            "dagster_home": {"env": "DAGSTER_HOME"}, "instance_config_map": {"env": "DAGSTER_K8S_INSTANCE_CONFIG_MAP"},
            "postgres_password_secret": {"env": "DAGSTER_K8S_PG_PASSWORD_SECRET"},
            "env_config_maps": [{"env": "DAGSTER_K8S_PIPELINE_RUN_ENV_CONFIGMAP"}],
            "env_secrets": [s["name"] for s in k8s["envSecrets"]],
            "run_k8s_config": {"container_config": k8s["runK8sConfig"]["containerConfig"]},
        }},
        "run_coordinator": {"module": "dagster.core.run_coordinator", "class": "QueuedRunCoordinator",
                            "config": daemon["runCoordinator"]["config"]["queuedRunCoordinator"]},
        "concurrency": {"runs": {"max_concurrent_runs": runs["maxConcurrentRuns"],
                                 "tag_concurrency_limits": runs["tagConcurrencyLimits"]},
                        "pools": {"default_limit": pools["defaultLimit"], "granularity": pools["granularity"]}},
        "compute_logs": {"module": "dagster_aws.s3.compute_log_manager", "class": "S3ComputeLogManager",
                         "config": {"bucket": s3_logs["bucket"], "prefix": s3_logs["prefix"],
                                    "region": s3_logs["region"]}},
        "run_monitoring": {"enabled": True, "start_timeout_seconds": daemon["runMonitoring"]["startTimeoutSeconds"],
                           "poll_interval_seconds": daemon["runMonitoring"]["pollIntervalSeconds"],
                           "free_slots_after_run_end_seconds": daemon["runMonitoring"]["freeSlotsAfterRunEndSeconds"]},
        "run_retries": {"enabled": daemon["runRetries"]["enabled"], "max_retries": daemon["runRetries"]["maxRetries"],
                        "retry_on_asset_or_op_failure": daemon["runRetries"]["retryOnAssetOrOpFailure"]},
        "telemetry": {"enabled": values["telemetry"]["enabled"]},
    }


@pytest.fixture
def k8s_instance(tmp_path, monkeypatch):
    pytest.importorskip("dagster_k8s", reason="dagster-k8s is in the [dev] and [deploy] extras")
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG)
    for var, value in [("DAGSTER_K8S_INSTANCE_CONFIG_MAP", "viscon-dagster-instance"),
                       ("DAGSTER_K8S_PG_PASSWORD_SECRET", "dagster-postgresql-secret"),
                       ("DAGSTER_K8S_PIPELINE_RUN_ENV_CONFIGMAP", "viscon-dagster-pipeline-env")]:
        monkeypatch.setenv(var, value)  # the chart sets these in its pods
    home = tmp_path / "k8s_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(helm_instance(load("helm/values.yaml"), kubeconfig)))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        yield instance


def gpu_step_tags() -> dict:
    from viscon_dagster.definitions import defs

    captions = next(a for a in defs.assets if isinstance(a, dg.AssetsDefinition)
                    and dg.AssetKey("captions") in a.keys)
    return dict(captions.op.tags)


def test_the_k8s_run_launcher_builds_from_the_helm_values(k8s_instance):
    from dagster_k8s import K8sRunLauncher

    launcher = k8s_instance.run_launcher
    assert isinstance(launcher, K8sRunLauncher)
    assert launcher.env_secrets == ["viscon-secrets"] and launcher.job_namespace == "viscon"
    assert k8s_instance.run_retries_max_retries == 2 and k8s_instance.run_monitoring_enabled
    assert k8s_instance.get_concurrency_config().pool_config.default_pool_limit == 16
    assert k8s_instance.run_monitoring_settings["free_slots_after_run_end_seconds"] == 300  # pool slots come back


def test_a_gpu_step_pod_asks_for_a_gpu_on_gpu_nodes(k8s_instance):
    """The pod k8s_job_executor builds for the captions step: run launcher config, then the step's
    `dagster-k8s/config` op tag (as dagster_k8s.executor.K8sStepHandler merges them)."""
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import construct_dagster_k8s_job, get_user_defined_k8s_config

    run = dg.DagsterRun(job_name="__ASSET_JOB", run_id="0123abcd-0000-0000-0000-000000000000")
    context = K8sContainerContext.create_for_run(run, k8s_instance.run_launcher, include_run_tags=False)
    context = context.merge(K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(gpu_step_tags())))
    job_config = context.get_k8s_job_config("registry.example.com/viscon-dagster-gpu:0.1.0",
                                            k8s_instance.run_launcher)
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

    cpu_context = K8sContainerContext.create_for_run(run, k8s_instance.run_launcher, include_run_tags=False)
    cpu_pod = construct_dagster_k8s_job(cpu_context.get_k8s_job_config("img:1", k8s_instance.run_launcher),
                                        ["dagster"], "dagster-step-docs", component="step_worker",
                                        user_defined_k8s_config=cpu_context.run_k8s_config).spec.template.spec
    assert gpu.K8S_GPU_RESOURCE not in (cpu_pod.containers[0].resources.limits or {})  # CPU steps: no GPU


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
        # what launch_run adds to RunTask for a run (dagster_aws.ecs.launcher: its tag handling)
        gpu_run = dg.DagsterRun(job_name="__ASSET_JOB", tags=gpu.gpu_run_tags())
        assert launcher._get_container_overrides(gpu_run) == {"resourceRequirements": [{"type": "GPU", "value": "1"}]}
        kwargs = launcher._get_run_task_kwargs_from_run(gpu_run)
        assert kwargs["taskDefinition"] == gpu.ECS_GPU_TASK_DEFINITION
        assert kwargs["capacityProviderStrategy"][0]["capacityProvider"] == gpu.ECS_GPU_CAPACITY_PROVIDER
        cpu_run = dg.DagsterRun(job_name="__ASSET_JOB")
        assert launcher._get_container_overrides(cpu_run) == {}
        assert launcher._get_run_task_kwargs_from_run(cpu_run) == {}


def test_the_production_instance_gives_back_the_pool_slots_of_ended_runs(tmp_path):
    config = load("dagster.yaml")
    del config["storage"]  # Postgres: tested on a real server in tests/postgres
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(config))
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] == 300


def test_templates_and_code_agree_on_gpu_names():
    values = load("helm/values.yaml")
    assert values["concurrency"]["pools"]["defaultLimit"] >= 1
    assert {"key": gpu.ACCELERATOR_TAG, "value": gpu.ACCELERATOR_GPU, "limit": 16} in \
        values["concurrency"]["runs"]["tagConcurrencyLimits"]
    for path in ["dagster.yaml", "ecs/dagster.yaml"]:
        limits = load(path)["concurrency"]["runs"]["tag_concurrency_limits"]
        assert {"key": gpu.ACCELERATOR_TAG, "value": gpu.ACCELERATOR_GPU, "limit": 16} in limits, path
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
