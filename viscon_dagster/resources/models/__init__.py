"""Model backends as Dagster resources, chosen by configuration; assets only see `ModelBackend`."""

from viscon_dagster.resources.models.base import ModelBackend
from viscon_dagster.resources.models.openai_http import OpenAIHTTPBackend

__all__ = ["ModelBackend", "OpenAIHTTPBackend"]
