"""GPU tag names, in one place: the assets, the launchers' routing and the deploy/ templates all read these.

- `GPU_POOL`: the Dagster concurrency pool of GPU steps (its limit = GPUs available, set in the instance config).
- `ACCELERATOR_TAG`: asset/run tag a launcher or queue rule routes on (`viscon/accelerator: gpu`).
- `K8S_GPU_OP_TAGS`: the `dagster-k8s/config` op tag; under `k8s_job_executor` each GPU step gets its own pod
  asking for one GPU, scheduled on GPU nodes (node selector of NVIDIA's GPU feature discovery, the usual taint).
- `ECS_GPU_OP_TAGS`: the same for dagster-aws' `ecs_executor` (VISCON_EXECUTOR=ecs, deploy/ecs): each GPU step
  is a task of the GPU task definition on the GPU capacity provider (EC2: Fargate has no GPUs) with one GPU
  (`ecs/run_task_kwargs`, `ecs/container_overrides`). On both platforms the run's own worker and its CPU steps
  hold no GPU: GPU capacity is asked per step, never per run.
- `gpu_run_tags()`: run tags of a run holding GPU steps (`viscon/accelerator: gpu`), for the UI and queue rules;
  no launcher routes a whole run to GPU capacity.
- `VISCON_GPU_STEP_PODS=0`: the models run behind a `vllm serve` fleet, so GPU steps' pods ask for no GPU
  (the `gpu` pool still bounds how many call the fleet at once).
"""
from __future__ import annotations

import json
import os

GPU_POOL = "gpu"
ACCELERATOR_TAG = "viscon/accelerator"
ACCELERATOR_GPU = "gpu"

K8S_GPU_RESOURCE = "nvidia.com/gpu"
K8S_GPU_NODE_SELECTOR = {"nvidia.com/gpu.present": "true"}
K8S_GPU_TOLERATIONS = [{"key": K8S_GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
K8S_CONFIG_TAG = "dagster-k8s/config"
K8S_GPU_OP_TAGS = {K8S_CONFIG_TAG: {
    "container_config": {"resources": {"requests": {K8S_GPU_RESOURCE: "1"}, "limits": {K8S_GPU_RESOURCE: "1"}}},
    "pod_spec_config": {"node_selector": K8S_GPU_NODE_SELECTOR, "tolerations": K8S_GPU_TOLERATIONS},
}}

ECS_CONTAINER_OVERRIDES_TAG = "ecs/container_overrides"
ECS_RUN_TASK_KWARGS_TAG = "ecs/run_task_kwargs"
ECS_GPU_CAPACITY_PROVIDER = "viscon-gpu"      # deploy/ecs: an EC2 GPU auto-scaling group's capacity provider
ECS_GPU_TASK_DEFINITION = "viscon-gpu-run"     # deploy/ecs/gpu-task-definition.json: the CUDA image
ECS_GPU_CONTAINER_OVERRIDES = {"resourceRequirements": [{"type": "GPU", "value": "1"}]}
ECS_GPU_RUN_TASK_KWARGS = {"taskDefinition": ECS_GPU_TASK_DEFINITION,
                           "capacityProviderStrategy": [{"capacityProvider": ECS_GPU_CAPACITY_PROVIDER, "weight": 1}]}
# op tags are strings: the ecs_executor json.loads them
ECS_GPU_OP_TAGS = {ECS_CONTAINER_OVERRIDES_TAG: json.dumps(ECS_GPU_CONTAINER_OVERRIDES, sort_keys=True),
                   ECS_RUN_TASK_KWARGS_TAG: json.dumps(ECS_GPU_RUN_TASK_KWARGS, sort_keys=True)}


def gpu_asset_kwargs() -> dict:
    """Keyword arguments of a GPU asset: @dg.asset(..., **GPU_ASSET_KWARGS)."""
    pods_ask_for_gpu = os.environ.get("VISCON_GPU_STEP_PODS", "1").strip() != "0"
    return {"pool": GPU_POOL, "tags": {ACCELERATOR_TAG: ACCELERATOR_GPU},
            "op_tags": {**K8S_GPU_OP_TAGS, **ECS_GPU_OP_TAGS} if pods_ask_for_gpu else {}}


GPU_ASSET_KWARGS = gpu_asset_kwargs()


def gpu_run_tags() -> dict[str, str]:
    """Run tags of a run with GPU steps. No ECS routing here: as a run tag, `ecs/run_task_kwargs` would put the
    run's worker and every CPU step of it on a GPU task (the GPU is asked per step: ECS_GPU_OP_TAGS)."""
    return {ACCELERATOR_TAG: ACCELERATOR_GPU}
