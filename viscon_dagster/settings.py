"""Settings read from the environment: the error a value the pipeline cannot use raises, and the checks shared by
more than one place (the storage root: the CLI, the code server and run workers all read it)."""

from __future__ import annotations

import re
from pathlib import Path


class SettingError(ValueError):
    """A setting (environment variable or resource config) with a value the pipeline cannot use."""


STORAGE_ROOT_FORMS = "an absolute path (/data/viscon), file:///data/viscon or s3://bucket/prefix"
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def storage_root_url(value: str, setting: str) -> str:
    """The storage root as a URL (`file:///abs/dir` or `s3://bucket/prefix`), or a SettingError naming
    `setting`. Relative paths are refused: the CLI, the webserver's code server and run workers may
    start in different folders (a container's WORKDIR), and a mistyped scheme (`s3:/b`) is one too."""
    def refuse(why: str) -> SettingError:
        return SettingError(f"{setting}={value!r} is not a storage root: {why}; use {STORAGE_ROOT_FORMS}")

    url = value.strip()
    scheme = _SCHEME.match(url)
    if scheme is None:
        if not url.startswith("/"):
            raise refuse(f"a relative path (did you mean {Path(url).resolve()}?)")
        return Path(url).as_uri().rstrip("/")
    name, rest = scheme.group(1).lower(), url[scheme.end():]
    if name not in ("file", "s3"):
        raise refuse(f"the scheme {name}: is not supported")
    if not rest.startswith("//"):
        raise refuse(f"{name}: must be followed by //")
    location = rest[2:]
    if name == "file":
        if not location.startswith("/"):
            raise refuse("a file:// URL needs an absolute path (file:///abs/dir)")
        return f"file://{location.rstrip('/')}" if location.strip("/") else "file:///"
    bucket = location.split("/", 1)[0]
    if not _BUCKET.match(bucket):
        raise refuse(f"{bucket!r} is not an S3 bucket name" if bucket else "no bucket after s3://")
    return f"s3://{location.rstrip('/')}"
