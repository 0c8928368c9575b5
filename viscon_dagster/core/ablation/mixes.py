"""The ablation's partitions: every mix of core/chain/conversations.py, and `none` (the base model untouched).

The paper's ordering, as far as this project has it (its §5.3 / Table 1 body is not available here; see
docs/ablation.md): the leaky mix beats every non-leaky composition (the abstract), the separated mix next (its
Table 1 as the project's issue quotes it); the other compositions are left level (their order is not given); the
base model last (IDEFICS2-8b: 63.3 base, 65.5 with non-contextual data, 68.2 with VisCon — the six-benchmark
average, PIPELINE.md). Ranks: 1 = best; equal ranks are pairs the paper does not order (Kendall's τ-b counts
them neither way).
"""

from __future__ import annotations

from viscon_dagster.core.chain.conversations import MIXES

BASE, LEAKY = "none", "leaky"
ABLATION_MIXES = (*MIXES, BASE)
PAPER_RANK = {"leaky": 1, "separate": 2, "captions": 3, "free_form": 3, "mcq": 3, "qa": 3, "noncontextual": 3,
              "none": 4}
BUDGETS = ("steps", "tokens")
