"""One source of truth for GPU tag names: the assets carry them, the run tags are what the ECS launcher reads."""
import json

import dagster as dg

from viscon_dagster import gpu


def test_gpu_run_tags_route_no_whole_run_to_a_gpu():
    tags = gpu.gpu_run_tags()
    assert tags == {gpu.ACCELERATOR_TAG: gpu.ACCELERATOR_GPU}  # ECS routing is per step (ECS_GPU_OP_TAGS)
    dg.DagsterRun(job_name="j", tags=tags)  # valid Dagster run tags


def test_ecs_gpu_op_tags_are_strings_the_ecs_executor_can_parse():
    tags = gpu.ECS_GPU_OP_TAGS
    assert all(isinstance(v, str) for v in tags.values())
    one_gpu = {"resourceRequirements": [{"type": "GPU", "value": "1"}]}
    assert json.loads(tags[gpu.ECS_CONTAINER_OVERRIDES_TAG]) == one_gpu
    assert json.loads(tags[gpu.ECS_RUN_TASK_KWARGS_TAG])["capacityProviderStrategy"][0]["capacityProvider"] == \
        gpu.ECS_GPU_CAPACITY_PROVIDER


def test_gpu_assets_carry_the_pool_and_tags_from_gpu_module():
    from viscon_dagster.definitions import defs

    gpu_assets = [a for a in defs.assets if isinstance(a, dg.AssetsDefinition) and a.op.pool == gpu.GPU_POOL]
    assert gpu_assets, "no asset in the gpu pool"
    for a in gpu_assets:
        assert a.op.tags[gpu.K8S_CONFIG_TAG] == gpu.K8S_GPU_OP_TAGS[gpu.K8S_CONFIG_TAG] or \
            json.loads(a.op.tags[gpu.K8S_CONFIG_TAG]) == gpu.K8S_GPU_OP_TAGS[gpu.K8S_CONFIG_TAG]
        for name, value in gpu.ECS_GPU_OP_TAGS.items():
            assert a.op.tags[name] == value
        for key in a.keys:
            assert a.tags_by_key[key][gpu.ACCELERATOR_TAG] == gpu.ACCELERATOR_GPU
