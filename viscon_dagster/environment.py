"""Resources chosen by the environment, never by asset code.

Every setting has an embedded default (local storage, tiny local models, the bundled sample) and an
environment variable to change it; secrets are read as `dg.EnvVar` references, so their values never
enter run config, logs or asset metadata.

Model roles: `caption` (the teacher VLM), `qa` (the text LLM) and `judge` (the captioner evaluation's judge,
a VLM by default: it compares two captions of an image). For each role ROLE:
    VISCON_ROLE_BACKEND   transformers (default) | openai | openai_batch | vllm
    VISCON_ROLE_MODEL     model id or path (default: the tiny local VLM / LM under .viscon/models)
    VISCON_ROLE_BASE_URL  for openai / openai_batch: an OpenAI-compatible server (`vllm serve`, …)
    VISCON_ROLE_API_KEY_ENV  the variable holding the key (default OPENAI_API_KEY)
    VISCON_ROLE_OPTIONS   a JSON object of the backend's other settings, e.g.
                          {"max_concurrency": 256, "requests_per_minute": 5000} or {"tensor_parallel_size": 2}
"""

from __future__ import annotations

import json
import os

import dagster as dg
from dagster_aws.s3 import S3Resource

from viscon_dagster.paths import models_dir, sample_dir
from viscon_dagster.resources.image_fetcher import ImageFetcherResource
from viscon_dagster.resources.models import BACKENDS, ModelBackend, TransformersLocalBackend
from viscon_dagster.settings import SettingError

# the judge of the captioner's evaluation (core/captioner/judge.py) defaults to the tiny VLM, so it sees the image
TINY_MODELS = {"caption": "tiny-idefics3", "qa": "tiny-lm", "judge": "tiny-idefics3"}
def env_secret(name: str):
    """An EnvVar reference when the variable is set (its value never enters config or logs)."""
    return dg.EnvVar(name) if os.environ.get(name) else None


def s3_resource() -> S3Resource:
    return S3Resource(
        endpoint_url=os.environ.get("VISCON_S3_ENDPOINT_URL") or None,
        region_name=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None,
        aws_access_key_id=env_secret("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=env_secret("AWS_SECRET_ACCESS_KEY"),
        aws_session_token=env_secret("AWS_SESSION_TOKEN"),
    )


def image_fetcher(**overrides) -> ImageFetcherResource:
    """file:// image URLs are read only under `VISCON_IMAGE_FILE_ROOTS` (os.pathsep-separated),
    by default the bundled sample's image folder."""
    roots = os.environ.get("VISCON_IMAGE_FILE_ROOTS")
    allowed = roots.split(os.pathsep) if roots else [str(sample_dir() / "images")]
    return ImageFetcherResource(**{"allowed_file_roots": allowed, **overrides})


def backend_options(role: str, cls: type[ModelBackend]) -> dict:
    """VISCON_ROLE_OPTIONS, checked against the backend's settings (a misspelt one must not be ignored)."""
    name = f"VISCON_{role.upper()}_OPTIONS"
    raw = os.environ.get(name, "").strip()
    if not raw:
        return {}
    try:
        options = json.loads(raw)
    except json.JSONDecodeError as e:
        raise SettingError(f"{name} is not JSON: {e}") from None
    if not isinstance(options, dict):
        raise SettingError(f"{name} must be a JSON object of {cls.__name__} settings")
    unknown = sorted(set(options) - set(cls.model_fields))
    if unknown:
        raise SettingError(f"{name}: {cls.__name__} has no setting {', '.join(unknown)}; "
                         f"it has {', '.join(sorted(cls.model_fields))}")
    prefix = f"VISCON_{role.upper()}_"
    if "api_key" in options:
        raise SettingError(f"{name}: keys never go in options; name their variable in {prefix}API_KEY_ENV")
    if "model" in options:
        raise SettingError(f"{name}: set the model with {prefix}MODEL")
    return options


def model_backend(role: str) -> ModelBackend:
    prefix = f"VISCON_{role.upper()}_"
    kind = os.environ.get(prefix + "BACKEND", "transformers")
    if kind not in BACKENDS:
        raise SettingError(f"{prefix}BACKEND={kind!r}: use one of {', '.join(BACKENDS)}")
    model = os.environ.get(prefix + "MODEL")
    cls = BACKENDS[kind]
    options = backend_options(role, cls)
    if kind == "transformers" and not model:
        # the tiny random models never stop a JSON string on their own: cap strings so answers close. Q&A prompts
        # are short and every decoding step has a fixed cost: 64 a batch is 1.5x faster than 16 on a CPU
        defaults = {"json_max_string_length": 32, "batch_size": 64 if role == "qa" else 16}
        return TransformersLocalBackend(model=str(models_dir() / TINY_MODELS[role]), **{**defaults, **options})
    model = model or str(models_dir() / TINY_MODELS[role])
    if kind in ("openai", "openai_batch"):
        options = {"base_url": os.environ.get(prefix + "BASE_URL") or None,
                   "api_key": env_secret(os.environ.get(prefix + "API_KEY_ENV", "OPENAI_API_KEY")), **options}
    return cls(model=model, **options)


EXECUTORS = ("multiprocess", "in_process", "k8s", "ecs")


def executor_from_env():
    """VISCON_EXECUTOR: `multiprocess` (Dagster's default: steps in subprocesses of the run), `in_process`
    (steps in the run's own process: saves each step's ~5 s of imports; a run's per-shard steps form a chain,
    so they run one after another either way), `k8s` (dagster-k8s' k8s_job_executor: each step in its own
    pod, so GPU steps get GPU pods; deploy/helm) or `ecs` (dagster-aws' ecs_executor: each step its own ECS task,
    GPU steps on the GPU task definition; deploy/ecs)."""
    kind = os.environ.get("VISCON_EXECUTOR", "multiprocess").strip() or "multiprocess"
    if kind not in EXECUTORS:
        raise SettingError(f"VISCON_EXECUTOR={kind!r}: use one of {', '.join(EXECUTORS)}")
    if kind == "multiprocess":
        return None
    if kind == "in_process":
        return dg.in_process_executor
    if kind == "ecs":
        from dagster_aws.ecs import ecs_executor

        return ecs_executor
    try:
        from dagster_k8s import k8s_job_executor
    except ImportError:
        raise SettingError("VISCON_EXECUTOR=k8s needs dagster-k8s: install the project's [deploy] extra") from None
    return k8s_job_executor
