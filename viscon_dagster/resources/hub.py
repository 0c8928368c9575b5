"""Where releases are published: the Hugging Face Hub (token from the environment) or any fsspec URL."""

from __future__ import annotations

import dagster as dg
from pydantic import Field


class HubResource(dg.ConfigurableResource):
    token: str | None = Field(None, description="set with dg.EnvVar('HF_TOKEN'); never logged")
    endpoint: str | None = Field(None, description="Hub URL (default huggingface.co or $HF_ENDPOINT)")
    private: bool = True
