"""The project's code location for the daemon tests, configured by the environment as in production.

`VISCON_TEST_QA_PROMPT=v2` stands for a change of the Q&A prompt's wording in the code (its version follows
the text), as the next deploy of a code location would carry it.
"""

import os

from viscon_dagster.core.chain.prompts import QA

if os.environ.get("VISCON_TEST_QA_PROMPT") == "v2":
    QA.system += " Prefer questions about what the page says about the image."

from viscon_dagster.definitions import build_definitions  # noqa: E402 (after the prompt change)

defs = build_definitions()
