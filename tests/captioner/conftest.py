"""Fixtures of the captioner tests: the evaluation's tiny CLIP and a scripted judge on loopback."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory) -> Path:
    """A tiny random CLIP (demo/tiny_models.build_tiny_clip): CLIPScore's plumbing, not its values."""
    from viscon_dagster.demo.tiny_models import TINY_CLIP, build_tiny_clip

    return build_tiny_clip(tmp_path_factory.mktemp("clip") / TINY_CLIP)


@pytest.fixture
def judge():
    """A scripted judge (tests/captioner/judge_server.py) that prefers the caption using more of the page's
    words; yields the server."""
    from tests.captioner.judge_server import ScriptedJudge

    server = ScriptedJudge(prefer="page")
    server.url = server.start()
    yield server
    server.stop()
