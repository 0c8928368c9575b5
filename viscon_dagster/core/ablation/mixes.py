"""The ablation's partitions: every mix of core/chain/conversations.py, and `none` (the base model untouched).

The paper's ordering, as far as this project has it (its §5.3 / Table 1 body is not available here; see
docs/ablation.md): the leaky mix beats every non-leaky composition (the abstract), the separated mix next (its
Table 1 as far as it is quoted); the other compositions are left level (their order is not given); the
base model last (IDEFICS2-8b: 63.3 base, 65.5 with non-contextual data, 68.2 with VisCon — the six-benchmark
average, from the paper's abstract). Ranks: 1 = best; equal ranks are pairs the paper does not order (Kendall's
τ-b counts them neither way).
"""

from __future__ import annotations

from viscon_dagster.core.chain.conversations import MIXES

BASE, LEAKY = "none", "leaky"
ABLATION_MIXES = (*MIXES, BASE)
PAPER_RANK = {"leaky": 1, "separate": 2, "captions": 3, "free_form": 3, "mcq": 3, "qa": 3, "noncontextual": 3,
              "none": 4}
BUDGETS = ("steps", "tokens")


def token_budget_order(records: list, lengths: list[int], budget_tokens: int) -> tuple[list, int]:
    """The tokens budget: `records` (in their seeded order) taken one after another, from the start again when the
    mix is shorter than the budget, until their tokens reach `budget_tokens`; (records to train on, their tokens)."""
    if not records or budget_tokens <= 0 or min(lengths) <= 0:
        raise ValueError(f"a tokens budget needs records with tokens and a positive budget (got {budget_tokens})")
    order, total, i = [], 0, 0
    while total < budget_tokens:
        order.append(records[i % len(records)])
        total += lengths[i % len(records)]
        i += 1
    return order, total
