"""The training processes' Pipes reader parses whole lines only: a line the reader catches half-written is joined
with its end (Dagster's own reader dies on it, losing every later message)."""

from __future__ import annotations

import json
import threading
import time

from dagster._utils import tail_file

from viscon_dagster.resources.pipes import whole_lines


def test_a_line_read_in_pieces_is_parsed_whole(tmp_path):
    path = tmp_path / "messages"
    path.write_text("")
    first = json.dumps({"method": "log", "params": {"message": "train step 1/2 loss 1.0"}}) + "\n"
    last = json.dumps({"method": "report_asset_materialization", "params": {"data_version": "abc"}}) + "\n"
    done = threading.Event()

    def writer():
        with path.open("a") as f:
            f.write(first)
            f.write(last[:40])  # the reader sees this before the rest is written
            f.flush()
            time.sleep(0.3)
            f.write(last[40:])
            f.flush()
        time.sleep(0.1)
        done.set()

    pieces = []

    def chunks():
        for chunk in tail_file(str(path), done.is_set):
            pieces.append(chunk)
            yield chunk

    t = threading.Thread(target=writer)
    t.start()
    lines = list(whole_lines(chunks()))
    t.join()
    assert len(pieces) == 3  # the torn line did come in two reads …
    assert [json.loads(line)["method"] for line in lines] == ["log", "report_asset_materialization"]  # … parsed once
