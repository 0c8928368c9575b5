"""Model backends as Dagster resources, chosen by configuration; assets only see `ModelBackend`.

    llm.generate(requests, journal_dir=...) -> list[Response]   # same order; pay-once journal
    llm.metadata(responses, remaining_partitions=...) -> dict   # flat asset metadata
"""

from viscon_dagster.resources.models.base import ModelBackend
from viscon_dagster.resources.models.openai_batch import OpenAIBatchBackend
from viscon_dagster.resources.models.openai_http import OpenAIHTTPBackend
from viscon_dagster.resources.models.transformers_local import TransformersLocalBackend
from viscon_dagster.resources.models.vllm_offline import VLLMOfflineBackend

# configuration names -> classes, for definitions that pick a backend from settings
BACKENDS: dict[str, type[ModelBackend]] = {
    "transformers": TransformersLocalBackend,  # the default
    "openai": OpenAIHTTPBackend,
    "openai_batch": OpenAIBatchBackend,
    "vllm": VLLMOfflineBackend,
}

__all__ = ["BACKENDS", "ModelBackend", "OpenAIBatchBackend", "OpenAIHTTPBackend", "TransformersLocalBackend",
           "VLLMOfflineBackend"]
