"""The judge's win-rate through the real HTTP backend against a scripted judge that prefers by a rule: both
orders asked, ties and position-inconsistent verdicts counted as such, failed verdicts left out, the
journal (a rerun pays nothing)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.captioner.judge_server import ScriptedJudge
from viscon_dagster.core.captioner.bootstrap import resample_indices
from viscon_dagster.core.captioner.judge import JUDGE, VERDICT_SCHEMA, battles, win_rate
from viscon_dagster.core.models.request import ImageRef, SamplingParams
from viscon_dagster.resources.models import OpenAIHTTPBackend

# (tuned caption, opponent caption, the outcome for the tuned captioner)
CASES = [
    ("a harbour in Lisbon at dawn.", "a harbour [bad] somewhere.", "win"),
    ("boats moored in Lisbon.", "boats [bad].", "win"),
    ("a market hall in Lisbon.", "a hall [bad].", "win"),
    ("fishing boats in the harbour.", "fishing [bad] boats.", "win"),
    ("a photo [bad] of nothing.", "the old market hall in Lisbon.", "loss"),
    ("the same caption.", "the same caption.", "tie"),  # the same text: a tie, nothing asked
    ("a quiet street.", "a quiet lane.", "tie"),  # neither marked, same length: the judge says tie
    ("a caption [first] here.", "another caption.", "inconsistent"),  # the judge always answers "A"
    ("a caption [mute] here.", "another one.", "failed"),  # no JSON: no verdict
]


@pytest.fixture
def judge_server():
    server = ScriptedJudge()
    url = server.start()
    yield server, url
    server.stop()


def run(url, tmp_path, image: ImageRef | None):
    tuned, other, _ = zip(*CASES)
    params = SamplingParams(max_tokens=64, temperature=0.0)
    fights = battles(["page text about Lisbon's harbour"] * len(CASES), list(tuned), list(other),
                     [image] * len(CASES), params, "base")
    asked = [b for b in fights if b.tuned_first is not None]
    backend = OpenAIHTTPBackend(model="judge-vlm", base_url=url, api_key="k", max_attempts=1)
    responses = backend.generate([r for b in asked for r in (b.tuned_first, b.other_first)],
                                 journal_dir=tmp_path / "journal")
    answers = {b.item: (responses[2 * k], responses[2 * k + 1]) for k, b in enumerate(asked)}
    return win_rate("base", fights, answers, resample_indices(len(CASES), 400, 0)), responses, backend


def test_win_rate_asks_both_orders_and_counts_ties_inconsistency_and_failures(judge_server, tmp_path):
    server, url = judge_server
    image = ImageRef(url=(tmp_path / "x.jpg").as_uri(), sha256="0" * 64, mime="image/jpeg")
    (tmp_path / "x.jpg").write_bytes(b"\xff\xd8\xff\xd9")
    result, responses, backend = run(url, tmp_path, image)
    assert result.outcomes == [c[2] for c in CASES]
    assert result.counts == {"win": 4, "loss": 1, "tie": 2, "inconsistent": 1, "failed": 1}
    # win-rate over the judged items: (4 wins + ½·2 ties + ½·1 inconsistent) / 8
    assert result.win_rate.value == pytest.approx(5.5 / 8, abs=1e-4)
    assert result.win_rate.low <= result.win_rate.value <= result.win_rate.high
    assert result.p_value is not None and 0 <= result.p_value <= 1
    # every pair but the identical one was asked in both orders: (tuned, other) and (other, tuned)
    asked = [(t, o) for t, o, _ in CASES if t != o]
    assert set(server.shown) == {*asked, *((o, t) for t, o in asked)}
    assert server.with_image == server.requests  # the judge saw the image with every request
    assert {r.status for r in responses} == {"ok", "unparsable"}
    meta = backend.metadata(responses)  # the backend's accounting: requests, tokens, USD
    assert meta["model_requests"] == meta["model_requests_sent"] == len(responses) == 2 * 8
    # the position-biased judge picked "A" in both orders: its share of first-position picks is above ½
    assert result.position_a_share > 0.5
    # a rerun pays nothing: every verdict comes from the journal
    before = server.requests
    again, responses2, backend2 = run(url, tmp_path, image)
    assert server.requests == before and all(r.cached for r in responses2)
    assert backend2.metadata(responses2)["model_requests_sent"] == 0
    assert again.outcomes == result.outcomes


def test_a_clear_winner_is_significant_and_the_prompt_has_a_derived_version(judge_server, tmp_path):
    _, url = judge_server
    params = SamplingParams(max_tokens=64)
    n = 30
    fights = battles(["ctx"] * n, [f"good caption {i}." for i in range(n)], [f"[bad] {i}." for i in range(n)],
                     [None] * n, params, "teacher")
    backend = OpenAIHTTPBackend(model="judge", base_url=url, api_key="k", max_attempts=1)
    responses = backend.generate([r for b in fights for r in (b.tuned_first, b.other_first)])
    answers = {b.item: (responses[2 * b.item], responses[2 * b.item + 1]) for b in fights}
    result = win_rate("teacher", fights, answers, resample_indices(n, 400, 0))
    assert result.win_rate.value == 1.0 and result.significant and result.p_value == 0.0
    assert fights[0].tuned_first.json_schema == VERDICT_SCHEMA
    assert JUDGE.version.startswith("caption-judge-") and len(JUDGE.version) == len("caption-judge-") + 8
    # nothing judged: no rate, not significant
    empty = win_rate("base", fights[:1], {}, resample_indices(1, 10, 0))
    assert empty.win_rate is None and not empty.significant and empty.counts["failed"] == 1
    assert np.isfinite(result.win_rate.low)
