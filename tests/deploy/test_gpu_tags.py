"""One source of truth for GPU tag names: the assets carry them, the run tags are what the ECS launcher reads."""
import json

import dagster as dg

from viscon_dagster import gpu


def test_gpu_run_tags_are_strings_the_ecs_launcher_can_parse():
    tags = gpu.gpu_run_tags()
    assert all(isinstance(v, str) for v in tags.values())
    assert tags[gpu.ACCELERATOR_TAG] == gpu.ACCELERATOR_GPU
    gpu_request = {"resourceRequirements": [{"type": "GPU", "value": "1"}]}
    assert json.loads(tags[gpu.ECS_CONTAINER_OVERRIDES_TAG]) == gpu_request
    assert json.loads(tags[gpu.ECS_RUN_TASK_KWARGS_TAG])["capacityProviderStrategy"][0]["capacityProvider"]
    dg.DagsterRun(job_name="j", tags=tags)  # valid Dagster run tags


def test_gpu_assets_carry_the_pool_and_tags_from_gpu_module():
    from viscon_dagster.definitions import defs

    gpu_assets = [a for a in defs.assets if isinstance(a, dg.AssetsDefinition) and a.op.pool == gpu.GPU_POOL]
    assert gpu_assets, "no asset in the gpu pool"
    for a in gpu_assets:
        assert a.op.tags[gpu.K8S_CONFIG_TAG] == gpu.K8S_GPU_OP_TAGS[gpu.K8S_CONFIG_TAG] or \
            json.loads(a.op.tags[gpu.K8S_CONFIG_TAG]) == gpu.K8S_GPU_OP_TAGS[gpu.K8S_CONFIG_TAG]
        for key in a.keys:
            assert a.tags_by_key[key][gpu.ACCELERATOR_TAG] == gpu.ACCELERATOR_GPU
