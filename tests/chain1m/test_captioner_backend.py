"""The captioner backend on an S3 storage root (moto's server on loopback): a published checkpoint is downloaded
once into the local cache, captions are labelled by recipe and sha, and a checkpoint without a passed gate for
that sha is refused before anything is asked."""

from __future__ import annotations

import hashlib

import dagster as dg
import pytest
from dagster_aws.s3 import S3Resource
from PIL import Image

from viscon_dagster.core.captioner.published import GateResult, PublishedCaptioner, write_current, write_gate
from viscon_dagster.core.models.request import ImageRef, Request, SamplingParams
from viscon_dagster.demo.tiny_models import build_tiny_vlm
from viscon_dagster.resources.captioner_backend import CaptionerBackend, CaptionerNotReady
from viscon_dagster.resources.storage import StorageResource

SHA = hashlib.sha256(b"stand-in for the merged weights' hash").hexdigest()


@pytest.fixture
def s3_storage(s3_server, s3_bucket):
    bucket, _ = s3_bucket
    return StorageResource(root=f"s3://{bucket}/viscon", s3=S3Resource(
        endpoint_url=s3_server, region_name="us-east-1", aws_access_key_id=dg.EnvVar("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=dg.EnvVar("AWS_SECRET_ACCESS_KEY")))


def publish(storage: StorageResource, model_dir) -> PublishedCaptioner:
    published = PublishedCaptioner.create("tiny-demo", SHA, "tiny-student@0123456789", "teacher-vlm")
    dest = storage.path(published.path)
    dest.fs.put(str(model_dir) + "/", dest.path + "/", recursive=True)
    write_current(storage.root_path(), published)
    return published


def request(tmp_path) -> Request:
    image = tmp_path / "photo.jpg"
    Image.new("RGB", (64, 48), (200, 30, 30)).save(image)
    return Request.user("Describe the attached image.", images=[ImageRef.from_path(image, mime="image/jpeg")],
                        params=SamplingParams(max_tokens=8, temperature=0.0))


def test_an_s3_checkpoint_is_cached_locally_and_labels_its_captions(tmp_path, s3_storage):
    with dg.build_resources({"storage": s3_storage}) as resolved:
        storage = resolved.storage
        published = publish(storage, build_tiny_vlm(tmp_path / "model"))
        backend = CaptionerBackend(recipe="tiny-demo", storage=storage, cache_dir=str(tmp_path / "cache"))
        with pytest.raises(CaptionerNotReady, match=r"has not been evaluated: materialize captioner_evaluation"):
            backend.generate([request(tmp_path)])

        write_gate(storage.root_path(), GateResult("tiny-demo", SHA, True, {"bleu_tuned": 2.0, "bleu_base": 1.0}))
        backend = CaptionerBackend(recipe="tiny-demo", storage=storage, cache_dir=str(tmp_path / "cache"))
        (answer,) = backend.generate([request(tmp_path)])
    assert answer.ok and answer.model == published.label == f"contextual-captioner/tiny-demo@{SHA[:12]}"
    cached = tmp_path / "cache" / "tiny-demo" / SHA[:12]
    assert (cached / "config.json").is_file() and (cached / "model.safetensors").is_file()
    assert not [p for p in cached.parent.iterdir() if p.name != SHA[:12]]  # no partial download left beside it


def test_a_failed_gate_is_refused_with_its_scores(tmp_path, s3_storage):
    with dg.build_resources({"storage": s3_storage}) as resolved:
        storage = resolved.storage
        publish(storage, build_tiny_vlm(tmp_path / "model"))
        write_gate(storage.root_path(), GateResult("tiny-demo", SHA, False, {"bleu_tuned": 0.5, "bleu_base": 1.0}))
        backend = CaptionerBackend(recipe="tiny-demo", storage=storage, cache_dir=str(tmp_path / "cache"))
        with pytest.raises(CaptionerNotReady, match=r"failed its evaluation gate .*'bleu_base': 1.0"):
            backend.generate([request(tmp_path)])
    assert not (tmp_path / "cache").exists()  # nothing downloaded for a refused checkpoint
