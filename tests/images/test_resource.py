import dataclasses

from upath import UPath

from viscon_dagster.core.images import ImageRequest, ImageSettings
from viscon_dagster.resources.image_fetcher import ImageFetcherResource


def test_resource_defaults_are_the_core_defaults():
    core = ImageSettings()
    from_resource = ImageFetcherResource().settings()
    assert from_resource == dataclasses.replace(core, cpu_workers=from_resource.cpu_workers)
    assert from_resource.cpu_workers == core.cpu_workers


def test_resource_fetches_with_its_config(server, tmp_path):
    server.reset()
    res = ImageFetcherResource(allowed_hosts=["127.0.0.1"], max_side=200, retries=0)
    assert res.settings().allowed_hosts == ("127.0.0.1",)
    result = res.fetch([ImageRequest("d", "https://example.org", 0, server.url("/img/p20.jpg"))],
                       UPath(tmp_path), shard="r")
    row = result.table.to_pylist()[0]
    assert row["status"] == "ok" and max(row["width"], row["height"]) == 200
