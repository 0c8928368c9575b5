"""The Pipes client the training processes are launched with (the captioner's and the ablation's).

Dagster's file message reader tails the messages file line by line and parses whatever `readline()` returns; a
reader that catches the writer mid-line gets half a line, its thread dies on the JSON error, and every later message
— the loss lines, the materialization the asset needs — is lost (seen under load: "Unterminated string …", then the
step fails on a missing data version). This reader parses only whole lines: a partial line waits for its end.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from threading import Event

import dagster as dg
from dagster._utils import tail_file


def whole_lines(chunks: Iterable[str]) -> Iterator[str]:
    """Lines as `readline()` returns them while a file grows (a line may come in pieces) → whole lines."""
    pending = ""
    for chunk in chunks:
        pending += chunk
        if pending.endswith("\n"):
            yield pending
            pending = ""
    if pending.strip():  # the writer stopped mid-line: hand it over as it is (the JSON error names it)
        yield pending


class WholeLineFileMessageReader(dg.PipesFileMessageReader):
    def _reader_thread(self, handler, is_resource_complete: Event) -> None:
        try:
            for line in whole_lines(tail_file(self._path, is_resource_complete.is_set)):
                handler.handle_message(json.loads(line))
        except:  # noqa: E722 - as Dagster's reader: report any failure to the run, then stop
            handler.report_pipes_framework_exception(f"{self.__class__.__name__} reader thread", sys.exc_info())
            raise


class WholeLineTempFileMessageReader(dg.PipesTempFileMessageReader):
    @contextmanager
    def read_messages(self, handler):
        with tempfile.TemporaryDirectory() as tempdir:
            with WholeLineFileMessageReader(os.path.join(tempdir, "messages"),
                                            include_stdio_in_messages=self._include_stdio_in_messages
                                            ).read_messages(handler) as params:
                yield params


def pipes_subprocess_client() -> dg.PipesSubprocessClient:
    return dg.PipesSubprocessClient(message_reader=WholeLineTempFileMessageReader())
