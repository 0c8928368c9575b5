"""How long an answer waits between arriving and being on storage in the journal, while the image reads
of the other requests in flight keep the default thread pool busy. Images live on a loopback S3-protocol
server (moto), answers come from the loopback OpenAI double after `--latency` seconds.

    PYTHONPATH=. .venv/bin/python benchmarks/models/journal_latency.py [--n 600] [--concurrency 64]

Prints one JSON line: answer-to-journal delay percentiles (ms) and the wall time.
"""

import argparse
import hashlib
import io
import json
import logging
import time

from tests.models.openai_double import OpenAIDouble
from viscon_dagster.core.models.accounting import percentile
from viscon_dagster.core.models.journal import Journal
from viscon_dagster.core.models.request import ImageRef, Request
from viscon_dagster.resources.models import OpenAIHTTPBackend


def images_on_s3(n: int, size: int):
    import boto3
    from moto.server import ThreadedMotoServer
    from PIL import Image
    from upath import UPath

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's access log
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    creds = dict(aws_access_key_id="bench", aws_secret_access_key="bench", region_name="us-east-1")
    s3 = boto3.client("s3", endpoint_url=endpoint, **creds)
    s3.create_bucket(Bucket="bench")
    root = UPath("s3://bench", key="bench", secret="bench",
                 client_kwargs={"endpoint_url": endpoint, "region_name": "us-east-1"})
    refs = []
    for i in range(n):
        buf = io.BytesIO()
        Image.effect_noise((size, size), 60 + i % 50).convert("RGB").save(buf, format="JPEG", quality=90)
        s3.put_object(Bucket="bench", Key=f"img/{i}.jpg", Body=buf.getvalue())
        p = root / "img" / f"{i}.jpg"
        refs.append(ImageRef(url=str(p), sha256=hashlib.sha256(buf.getvalue()).hexdigest(),
                             storage_options=dict(p.storage_options), mime="image/jpeg"))
    return server, root, refs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--latency", type=float, default=0.05)
    ap.add_argument("--image-px", type=int, default=512)
    args = ap.parse_args()

    s3, root, refs = images_on_s3(args.n, args.image_px)
    double = OpenAIDouble(latency_s=args.latency).start()
    double.keep_log = False
    arrived: dict[str, float] = {}
    written: dict[str, float] = {}
    writes = [0]
    put_many = Journal.put_many

    def timed_put_many(self, responses):
        put_many(self, responses)
        writes[0] += 1
        now = time.perf_counter()
        written.update((r.fingerprint, now) for r in responses)

    Journal.put_many = timed_put_many  # measure only: the write itself is unchanged
    b = OpenAIHTTPBackend(model="m", base_url=double.base_url, api_key="k", max_concurrency=args.concurrency)
    reqs = [Request.user(f"caption {i}", [refs[i]]) for i in range(args.n)]
    t0 = time.perf_counter()
    out = b.generate(reqs, journal_dir=root / "journal",
                     on_response=lambda r: arrived.__setitem__(r.fingerprint, time.perf_counter()))
    wall = time.perf_counter() - t0
    delays = [(written[fp] - arrived[fp]) * 1000 for fp in arrived if fp in written]
    print(json.dumps({"ok": sum(r.ok for r in out), "journaled": len(delays), "writes": writes[0],
                      "wall_s": round(wall, 2),
                      **{f"delay_ms_p{q}": round(percentile(delays, q), 1) for q in (50, 95, 99)},
                      "delay_ms_max": round(max(delays), 1)}))
    double.stop()
    s3.stop()


if __name__ == "__main__":
    main()
