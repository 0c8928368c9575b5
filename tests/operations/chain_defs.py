"""The project's code location for the daemon tests, configured by the environment as in production.

`VISCON_TEST_QA_PROMPT=v2` stands for a change of the Q&A prompt in the code (a new system prompt and its
version), as the next deploy of a code location would carry it.
"""

import os

from viscon_dagster.assets import chain
from viscon_dagster.core.chain import qa

if os.environ.get("VISCON_TEST_QA_PROMPT") == "v2":
    qa.QA_SYSTEM = qa.QA_SYSTEM + " Prefer questions about what the page says about the image."
    qa.QA_PROMPT_VERSION = chain.QA_PROMPT_VERSION = "qa-v2"

from viscon_dagster.definitions import build_definitions  # noqa: E402 (after the prompt change)

defs = build_definitions()
