"""Requests a local model cannot take are rows, not a failed batch.

An HTTP server rejects such a request alone (400: a row, `core/models/failures.py`). A local engine
takes a batch, and one bad request can fail all of it: vLLM raises ValueError for the whole `llm.chat`
call when one prompt is longer than `max_model_len`, and transformers has no check of its own (past the
model's positions a model degrades or fails). So local backends check prompt lengths themselves where
they can count them (`context_overflow`, vLLM's own rule: an answer needs at least one token after the
prompt), stop an answer where the context ends (`answer_room`, as vLLM does), and run batches through
`isolate`, which splits a batch the engine refuses down to the requests it refuses. Those become rows
with the engine's message (`engine_rejection`); anything else an engine raises fails the partition.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TypeVar

from viscon_dagster.core.models.failures import is_context_length

R = TypeVar("R")


def context_overflow(prompt_tokens: int, context_length: int | None) -> str | None:
    """Why a prompt of `prompt_tokens` cannot be answered within `context_length` (None: unknown or it fits)."""
    if context_length is None or prompt_tokens < context_length:
        return None
    return (f"the prompt is {prompt_tokens} tokens and the model's context length is {context_length}: "
            "no room for an answer")


def answer_room(prompt_tokens: int, max_tokens: int, context_length: int | None) -> int:
    """How many answer tokens fit after the prompt: `max_tokens`, or fewer where the context ends first."""
    if context_length is None:
        return max_tokens
    return max(0, min(max_tokens, context_length - prompt_tokens))


def engine_rejection(e: BaseException) -> tuple[str, str] | None:
    """(error kind, message) when `e` is a local engine refusing a request, None otherwise.

    vLLM validates each prompt as it is added and raises ValueError (since 0.11 its subclass
    VLLMValidationError) naming the cause: a prompt longer than the maximum model length, more images
    than `limit_mm_per_prompt`, an invalid sampling parameter; transformers' processors raise ValueError
    for a request they cannot encode. Only a batch of one tells which request it was (`isolate`)."""
    if not isinstance(e, ValueError):
        return None
    text = f"{type(e).__name__}: {e}"[:500]
    return ("context_too_long" if is_context_length(str(e)) else "bad_request"), text


async def isolate(batch: Sequence[int], run: Callable[[list[int]], Awaitable[list[R]]],
                  rejection: Callable[[BaseException], tuple[str, str] | None] = engine_rejection,
                  ) -> AsyncIterator[tuple[list[int], list[R] | tuple[str, str]]]:
    """Run `batch` (positions); where `run` raises what `rejection` recognises, run each half, down to the
    single requests refused. Yields (positions, their results) for each part that ran and
    ([position], (kind, message)) for each request refused; anything else `run` raises propagates.
    A refusal costs only validation (an engine checks every prompt before it generates), so splitting
    costs about log2(len(batch)) refused calls per refused request, and no answer is generated twice."""
    batch = list(batch)
    try:
        results = await run(batch)
    except Exception as e:
        why = rejection(e)
        if why is None:
            raise
    else:
        yield batch, results
        return
    if len(batch) == 1:
        yield batch, why
        return
    mid = len(batch) // 2
    for half in (batch[:mid], batch[mid:]):
        async for part in isolate(half, run, rejection):
            yield part
