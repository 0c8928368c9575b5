"""The model directory's copy into storage: every file at its relative path, twice to the same place (a rerun
of the same checkpoint) without nesting, on a local root and on S3 (a real S3-protocol server on loopback)."""

from __future__ import annotations

import pytest
from upath import UPath

from viscon_dagster.core.captioner.weights import upload_model_dir

FILES = {"model.safetensors": b"w" * 4096, "config.json": b"{}", "adapter/adapter_config.json": b'{"r": 8}',
         "README.md": b"# card"}


def model_dir(root):
    for name, body in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(body)
    return root


def stored(dest: UPath) -> dict[str, bytes]:
    return {p.relative_to(dest).as_posix(): p.read_bytes() for p in dest.rglob("*") if p.is_file()}


def test_upload_twice_to_a_local_root(tmp_path):
    local = model_dir(tmp_path / "model")
    dest = UPath(tmp_path / "store" / "contextual_captioner" / "tiny-demo" / "abc")
    upload_model_dir(local, dest)
    upload_model_dir(local, dest)
    assert stored(dest) == FILES


def test_upload_twice_to_s3(tmp_path, s3_bucket, s3_server):
    bucket, client = s3_bucket
    local = model_dir(tmp_path / "model")
    dest = UPath(f"s3://{bucket}/root/contextual_captioner/tiny-demo/abc",
                 client_kwargs={"endpoint_url": s3_server, "region_name": "us-east-1"})
    upload_model_dir(local, dest)
    upload_model_dir(local, dest)  # the same checkpoint again: same keys, no nested copy
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == sorted(f"root/contextual_captioner/tiny-demo/abc/{name}" for name in FILES)
    assert stored(dest) == FILES


def test_a_short_copy_is_an_error(tmp_path, s3_bucket, s3_server, monkeypatch):
    bucket, _ = s3_bucket
    local = model_dir(tmp_path / "model")
    dest = UPath(f"s3://{bucket}/root/m", client_kwargs={"endpoint_url": s3_server, "region_name": "us-east-1"})
    put_file = dest.fs.put_file

    def drop_the_weights(lpath, rpath, **kw):  # a copy that loses one file on the way
        if not rpath.endswith("model.safetensors"):
            put_file(lpath, rpath, **kw)

    monkeypatch.setattr(dest.fs, "put_file", drop_the_weights)
    with pytest.raises(OSError, match="incomplete: model.safetensors missing or short"):
        upload_model_dir(local, dest)
