"""`viscon` as a user runs it: real processes, storage on the S3 protocol (moto on loopback), the
storage root checked where the definitions load, and the Dagster instance config it writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import dagster as dg
import pytest

from viscon_dagster.cli import main
from viscon_dagster.local.instance import default_instance_yaml

VISCON = str(Path(sys.executable).parent / "viscon")


def run_viscon(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([VISCON, *args], env={**os.environ, **env}, cwd=cwd, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
def test_register_on_s3_with_aws_variables(tmp_path, sample_dir, s3_server, s3_bucket):
    bucket, client = s3_bucket
    for shard in sorted((sample_dir / "shards").glob("*.parquet")):
        client.upload_file(str(shard), bucket, f"obelics/{shard.name}")
    secret = f"secret-{uuid.uuid4().hex}"
    env = {"VISCON_STORAGE_ROOT": f"s3://{bucket}/viscon", "VISCON_S3_ENDPOINT_URL": s3_server,
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": secret, "AWS_REGION": "us-east-1"}
    done = run_viscon(["shards", "register", f"s3://{bucket}/obelics"], env, tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"2 shards in s3://{bucket}/obelics; 2 newly registered" in done.stdout
    names = {o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="viscon/")["Contents"]}
    assert names == {"viscon/_registry/shards/sample-00000.json", "viscon/_registry/shards/sample-00001.json",
                     "viscon/_registry/shards.index.json"}
    index = json.loads(client.get_object(Bucket=bucket, Key="viscon/_registry/shards.index.json")["Body"].read())
    assert index == {f"sample-0000{i}": f"s3://{bucket}/obelics/sample-0000{i}.parquet" for i in range(2)}
    home = Path(os.environ["DAGSTER_HOME"])
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_dynamic_partitions("obelics_shards") == ["sample-00000", "sample-00001"]
    assert secret not in done.stdout + done.stderr
    stored = [p for p in home.rglob("*") if p.is_file()]
    assert stored and not [p for p in stored if secret.encode() in p.read_bytes()]


BAD_ROOTS = {
    "s3:/bucket/prefix": "s3: must be followed by //",
    "s3://": "no bucket after s3://",
    "ftp://host/x": "the scheme ftp: is not supported",
    "http://host/x": "the scheme http: is not supported",
    "data/store": "a relative path",
}


@pytest.mark.slow
def test_cli_refuses_a_bad_storage_root_before_writing_anything(tmp_path, sample_dir):
    cwd = tmp_path / "work"
    cwd.mkdir()
    done = run_viscon(["shards", "register", str(sample_dir / "shards")],
                      {"VISCON_STORAGE_ROOT": "s3:/bucket/prefix"}, cwd)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "viscon: VISCON_STORAGE_ROOT='s3:/bucket/prefix' is not a storage root: s3: must be followed by //; "
        "use an absolute path (/data/viscon), file:///data/viscon or s3://bucket/prefix")
    assert "Traceback" not in done.stderr
    assert list(cwd.iterdir()) == []  # no ./s3%3A/bucket/prefix


@pytest.mark.parametrize("source", ["no/such/folder", "file:///no/such/folder"])
@pytest.mark.slow
def test_registering_a_folder_that_does_not_exist_says_what_was_looked_for(tmp_path, source):
    done = run_viscon(["shards", "register", source], {"VISCON_STORAGE_ROOT": (tmp_path / "store").as_uri()}, tmp_path)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    message = done.stderr.strip().splitlines()[-1]
    assert message.startswith(f"viscon: no shard source at {source!r}: looked for ")
    assert "/no/such/folder" in message and "a folder of OBELICS parquet files" in message


@pytest.mark.slow
def test_dagster_refuses_to_load_definitions_with_a_bad_storage_root(tmp_path):
    done = subprocess.run([str(Path(sys.executable).parent / "dagster"), "definitions", "validate",
                           "-m", "viscon_dagster.definitions"], env={**os.environ, "VISCON_STORAGE_ROOT": "ftp://x/y"},
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert ("VISCON_STORAGE_ROOT='ftp://x/y' is not a storage root: the scheme ftp: is not supported"
            in done.stdout + done.stderr)


@pytest.mark.parametrize("root", sorted(BAD_ROOTS))
def test_definitions_load_names_the_variable_the_value_and_what_is_accepted(root, monkeypatch):
    from viscon_dagster.definitions import build_definitions
    from viscon_dagster.settings import SettingError

    monkeypatch.setenv("VISCON_STORAGE_ROOT", root)
    with pytest.raises(SettingError) as refused:
        build_definitions()
    assert str(refused.value).startswith(f"VISCON_STORAGE_ROOT={root!r} is not a storage root: {BAD_ROOTS[root]}")
    assert str(refused.value).endswith("use an absolute path (/data/viscon), file:///data/viscon or s3://bucket/prefix")
    monkeypatch.delenv("VISCON_STORAGE_ROOT")
    with pytest.raises(SettingError, match=f"StorageResource.root={root!r} is not a storage root"):
        build_definitions(storage_root=root)


@pytest.mark.parametrize("root, url", [("/data/viscon/", "file:///data/viscon"),
                                       ("file:///data/viscon", "file:///data/viscon"),
                                       ("s3://bucket/prefix/", "s3://bucket/prefix"),
                                       ("s3://bucket", "s3://bucket")])
def test_accepted_roots_become_urls(root, url, monkeypatch):
    from viscon_dagster.definitions import build_definitions

    monkeypatch.setenv("VISCON_STORAGE_ROOT", root)
    assert build_definitions().resources["storage"].root_url == url


def test_the_instance_config_is_written_once_with_run_monitoring(tmp_path, capsys):
    home = Path(os.environ["DAGSTER_HOME"])
    assert not (home / "dagster.yaml").exists()
    assert main(["shards", "list"]) == 0
    assert (home / "dagster.yaml").read_text() == default_instance_yaml()
    assert f"wrote {home / 'dagster.yaml'}" in capsys.readouterr().err
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_poll_interval_seconds == 30
        assert instance.run_monitoring_max_resume_run_attempts == 0
        assert instance.run_monitoring_max_runtime_seconds == 2 * 24 * 3600
        assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] == 60  # ended runs' pool slots
        assert not instance.run_retries_enabled
        concurrency = instance.get_concurrency_config()
        assert concurrency.pool_config.default_pool_limit is None  # other pools are not capped
        assert instance.event_log_storage.get_concurrency_info("gpu").slot_count == 1  # the gpu pool: one GPU
        assert concurrency.run_queue_config.max_concurrent_runs == 4
        assert concurrency.run_queue_config.tag_concurrency_limits == [
            {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1},
            {"key": "dagster/asset_partition_range_start", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}]


def test_a_users_instance_config_is_never_overwritten(tmp_path):
    home = Path(os.environ["DAGSTER_HOME"])
    mine = "telemetry:\n  enabled: false\n"
    (home / "dagster.yaml").write_text(mine)
    assert main(["shards", "list"]) == 0
    assert (home / "dagster.yaml").read_text() == mine
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert not instance.run_monitoring_enabled


def test_the_empty_config_of_earlier_versions_is_replaced(tmp_path):
    home = Path(os.environ["DAGSTER_HOME"])
    (home / "dagster.yaml").touch()
    assert main(["shards", "list"]) == 0
    assert (home / "dagster.yaml").read_text() == default_instance_yaml()
