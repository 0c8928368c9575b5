"""Every image request ends in exactly one status; this module names them all.

Kept/ok semantics (what downstream stages and the checks rely on):
- `ok`: the image was fetched, passed every filter and is the *kept* copy: its normalised JPEG is
  at `path` under the store, and `sha256` is unique among `ok` rows of a shard.
- `duplicate`: a valid image that is an exact (same sha256) or near (perceptual-hash) duplicate of
  an `ok` image earlier in request order; `duplicate_of` holds the kept image's sha256. Its own
  normalised file is also stored (`path`), but downstream stages use the kept one.
- everything else: no image; `error` says why.
"""

from __future__ import annotations

import re

OK = "ok"
DUPLICATE = "duplicate"

# fetch / transport
TIMEOUT = "timeout"
CONNECTION_ERROR = "connection_error"
BAD_RESPONSE = "bad_response"  # not valid HTTP (e.g. a body longer than its Content-Length)
TRUNCATED = "truncated"  # the connection closed before the declared body length
TOO_LARGE = "too_large"  # body (declared or streamed) over max_bytes
TOO_MANY_REDIRECTS = "too_many_redirects"
REDIRECT_LOOP = "redirect_loop"
NOT_FOUND = "not_found"  # file:// or s3:// object missing
READ_ERROR = "read_error"  # file:// or s3:// read failed otherwise
INVALID_URL = "invalid_url"
UNEXPECTED_ERROR = "unexpected_error"  # a bug or an exotic failure: the row keeps the exception text

# safety and politeness
BLOCKED_SCHEME = "blocked_scheme"
BLOCKED_PATH = "blocked_path"  # file:// outside every allowed root
BLOCKED_ADDRESS = "blocked_address"  # SSRF guard: private/loopback/... address not allow-listed
OPTED_OUT = "opted_out"  # X-Robots-Tag noai/noimageai/...
ROBOTS_DISALLOWED = "robots_disallowed"
FREQUENT_URL = "frequent_url"  # URL in more than K documents across the shards seen so far

# content
NOT_IMAGE = "not_image"
DECODE_ERROR = "decode_error"
DECOMPRESSION_BOMB = "decompression_bomb"  # more pixels than max_pixels
TOO_SMALL = "too_small"
BAD_ASPECT = "bad_aspect"

HTTP_PREFIX = "http_"


def http_status(code: int) -> str:
    return f"{HTTP_PREFIX}{code}"


KNOWN_STATUSES: frozenset[str] = frozenset({
    OK, DUPLICATE, TIMEOUT, CONNECTION_ERROR, BAD_RESPONSE, TRUNCATED, TOO_LARGE, TOO_MANY_REDIRECTS,
    REDIRECT_LOOP, NOT_FOUND, READ_ERROR, INVALID_URL, UNEXPECTED_ERROR, BLOCKED_SCHEME, BLOCKED_PATH,
    BLOCKED_ADDRESS, OPTED_OUT, ROBOTS_DISALLOWED, FREQUENT_URL, NOT_IMAGE, DECODE_ERROR,
    DECOMPRESSION_BOMB, TOO_SMALL, BAD_ASPECT,
})
"""The fixed statuses; `http_<code>` (any 3-digit HTTP status) completes the set."""

STATUS_REGEX = r"^(?:" + "|".join(sorted(KNOWN_STATUSES)) + r"|http_[1-5][0-9]{2})$"
"""One regex for the whole status set (for a great-expectations `match_regex` expectation)."""

KEPT_STATUS = OK

# Outcomes worth another try on a rerun: the journal does not count them as done.
TRANSIENT_STATUSES: frozenset[str] = frozenset({TIMEOUT, CONNECTION_ERROR, TRUNCATED, READ_ERROR})

_STATUS_RE = re.compile(STATUS_REGEX)


def is_known_status(status: str) -> bool:
    return bool(_STATUS_RE.match(status))


def is_transient(status: str) -> bool:
    """Rerun-worthy: network hiccups, 429 and 5xx answers."""
    if status in TRANSIENT_STATUSES:
        return True
    if status.startswith(HTTP_PREFIX):
        code = int(status[len(HTTP_PREFIX):])
        return code == 429 or code >= 500
    return False
