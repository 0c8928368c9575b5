"""Model backends as Dagster resources, chosen by configuration; assets only see `ModelBackend`."""

from viscon_dagster.resources.models.base import ModelBackend
from viscon_dagster.resources.models.openai_http import OpenAIHTTPBackend
from viscon_dagster.resources.models.openai_batch import OpenAIBatchBackend
from viscon_dagster.resources.models.transformers_local import TransformersLocalBackend
from viscon_dagster.resources.models.vllm_offline import VLLMOfflineBackend

__all__ = ["ModelBackend", "OpenAIBatchBackend", "OpenAIHTTPBackend", "TransformersLocalBackend", "VLLMOfflineBackend"]
