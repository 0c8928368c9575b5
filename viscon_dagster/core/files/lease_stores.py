"""Where a lease object lives, and how it changes: every write is conditional. Locally a file (create: a hard link of
a complete temporary file; replace and delete: a digest check under an `flock`); on S3 an object (create:
`PUT If-None-Match: *`; replace and delete: `If-Match: <ETag>`). `store_for(path)` picks one for a UPath."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import uuid
from pathlib import Path

_LOCAL = ("", "file", "local")
_S3 = ("s3", "s3a")


class LocalStore:
    """A file. Create is a hard link of a complete temporary file (atomic, never half-written);
    replace and delete check the digest of what is there under an exclusive flock of a guard file."""

    def __init__(self, path: str):
        self.path = path

    @staticmethod
    def _digest(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    def _tmp(self, data: bytes) -> str:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        tmp = f"{self.path}.{uuid.uuid4().hex}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return tmp

    @contextlib.contextmanager
    def _guarded(self):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with open(f"{self.path}.guard", "a") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            yield  # the lock goes with the descriptor

    def read(self) -> tuple[bytes, str] | None:
        try:
            data = Path(self.path).read_bytes()
        except FileNotFoundError:
            return None
        return data, self._digest(data)

    def create(self, data: bytes) -> str | None:
        tmp = self._tmp(data)
        try:
            os.link(tmp, self.path)
        except FileExistsError:
            return None
        finally:
            os.unlink(tmp)
        return self._digest(data)

    def replace(self, data: bytes, version: str) -> str | None:
        with self._guarded():
            current = self.read()
            if current is None or current[1] != version:
                return None
            os.replace(self._tmp(data), self.path)
        return self._digest(data)

    def delete(self, version: str) -> bool:
        with self._guarded():
            current = self.read()
            if current is None or current[1] != version:
                return False
            os.unlink(self.path)
        return True


_LOST_RACE = ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey", "404", "412", "409")


def _lost_race(error) -> bool:
    return error.response.get("Error", {}).get("Code") in _LOST_RACE


class S3Store:
    """An object. Create is `PUT If-None-Match: *`; replace and delete carry `If-Match: <ETag>`."""

    def __init__(self, client, bucket: str, key: str):
        self.client, self.bucket, self.key = client, bucket, key

    def read(self) -> tuple[bytes, str] | None:
        from botocore.exceptions import ClientError

        try:
            r = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise
        return r["Body"].read(), r["ETag"]

    def _put(self, data: bytes, **condition) -> str | None:
        from botocore.exceptions import ClientError

        try:
            return self.client.put_object(Bucket=self.bucket, Key=self.key, Body=data,
                                          ContentType="application/json", **condition)["ETag"]
        except ClientError as e:
            if _lost_race(e):
                return None
            raise

    def create(self, data: bytes) -> str | None:
        return self._put(data, IfNoneMatch="*")

    def replace(self, data: bytes, version: str) -> str | None:
        return self._put(data, IfMatch=version)

    def delete(self, version: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=version)
        except ClientError as e:
            if _lost_race(e):
                return False
            raise
        return True


def s3_client(storage_options: dict):
    """A boto3 client from the fsspec/s3fs options a UPath carries (endpoint, region, credentials)."""
    import boto3

    session = boto3.session.Session(
        aws_access_key_id=storage_options.get("key"), aws_secret_access_key=storage_options.get("secret"),
        aws_session_token=storage_options.get("token"), profile_name=storage_options.get("profile"))
    kwargs = dict(storage_options.get("client_kwargs") or {})
    if storage_options.get("endpoint_url"):
        kwargs.setdefault("endpoint_url", storage_options["endpoint_url"])
    return session.client("s3", **kwargs)


def store_for(path) -> LocalStore | S3Store:
    """The store of a UPath (or a plain local path)."""
    protocol = getattr(path, "protocol", "file")
    if protocol in _LOCAL:
        return LocalStore(path.path if hasattr(path, "path") else str(path))
    if protocol in _S3:
        bucket, _, key = path.path.partition("/")
        return S3Store(s3_client(dict(path.storage_options)), bucket, key)
    raise ValueError(f"partition leases need a local folder or S3, not {protocol}:// ({path})")
