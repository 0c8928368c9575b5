"""GPU tag names, in one place: the assets, the launchers' routing and the deploy/ templates all read these.

- `GPU_POOL`: the Dagster concurrency pool of GPU steps (its limit = GPUs available, set in the instance config).
- `ACCELERATOR_TAG`: asset/run tag a launcher or queue rule routes on (`viscon/accelerator: gpu`).
- `K8S_GPU_OP_TAGS`: the `dagster-k8s/config` op tag; under `k8s_job_executor` each GPU step gets its own pod
  asking for one GPU, scheduled on GPU nodes (node selector of NVIDIA's GPU feature discovery, the usual taint).
- `gpu_run_tags()`: run tags of a run holding GPU steps; `EcsRunLauncher` applies `ecs/container_overrides`
  (one GPU for the run's container) and `ecs/run_task_kwargs` (the GPU capacity provider: EC2, Fargate has none).
"""
from __future__ import annotations

import json

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
ECS_GPU_CAPACITY_PROVIDER = "viscon-gpu"
ECS_GPU_CONTAINER_OVERRIDES = {"resourceRequirements": [{"type": "GPU", "value": "1"}]}
ECS_GPU_RUN_TASK_KWARGS = {"capacityProviderStrategy": [{"capacityProvider": ECS_GPU_CAPACITY_PROVIDER, "weight": 1}]}

# keyword arguments of a GPU asset: @dg.asset(..., **GPU_ASSET_KWARGS)
GPU_ASSET_KWARGS = {"pool": GPU_POOL, "tags": {ACCELERATOR_TAG: ACCELERATOR_GPU}, "op_tags": K8S_GPU_OP_TAGS}


def gpu_run_tags() -> dict[str, str]:
    """Run tags of a run with GPU steps (tag values are strings: the ECS ones are JSON)."""
    return {
        ACCELERATOR_TAG: ACCELERATOR_GPU,
        ECS_CONTAINER_OVERRIDES_TAG: json.dumps(ECS_GPU_CONTAINER_OVERRIDES, sort_keys=True),
        ECS_RUN_TASK_KWARGS_TAG: json.dumps(ECS_GPU_RUN_TASK_KWARGS, sort_keys=True),
    }
