"""The preview as a person and the release see it: rendered in headless Chromium with the network sent to a
recording proxy on loopback, and written by the release asset into local storage and an S3 bucket (moto)."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path

import dagster as dg
import pytest
from dagster_aws.s3 import S3Resource
from upath import UPath

from tests.conftest import headless_chromium
from tests.exports.test_preview import (
    EXPECTED_STAGES,
    IMG_QUESTION,
    RECORDS_PER_MIX,
    SCRIPT_CAPTION,
    SHARDS,
    Dom,
    assert_self_contained,
    counted,
    write_storage,
)
from viscon_dagster.assets.exports import release_asset
from viscon_dagster.assets.spec import ChainSpec
from viscon_dagster.core.exports.preview import write_preview
from viscon_dagster.core.exports.preview_records import PreviewSources
from viscon_dagster.core.exports.versions import current_release_path
from viscon_dagster.partitions import obelics_shards
from viscon_dagster.resources.hub import HubResource
from viscon_dagster.resources.storage import StorageResource


@pytest.fixture(scope="module")
def stored(tmp_path_factory) -> UPath:
    """Every stage's tables for the sample shards in a local storage root."""
    root = UPath(tmp_path_factory.mktemp("storage"))
    write_storage(root)
    return root


class RecordingProxy(http.server.ThreadingHTTPServer):
    """An HTTP proxy on loopback that answers nothing and records what the browser asked for."""

    def __init__(self):
        self.asked: list[str] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _refuse(self):
                proxy.asked.append(self.path)
                self.send_response(502)
                self.end_headers()

            do_GET = do_HEAD = do_POST = do_CONNECT = _refuse

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def hosts(self) -> set[str]:
        return {p.split("//")[-1].split("/")[0].split(":")[0] for p in self.asked}


def chromium_dom(page: Path, profile: Path, proxy: RecordingProxy) -> str:
    out = headless_chromium(page.as_uri(), profile, f"--proxy-server=http://127.0.0.1:{proxy.server_address[1]}",
                            "--proxy-bypass-list=<-loopback>",
                            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1")
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


@pytest.mark.slow
def test_preview_renders_in_headless_chromium_without_fetching_anything(stored, tmp_path):
    proxy = RecordingProxy()
    try:
        # the proxy sees what a page loads: a page with a remote image is asked for it
        control = tmp_path / "control.html"
        control.write_text('<html><body><img src="http://cdn.example.org/remote.png"></body></html>')
        chromium_dom(control, tmp_path / "profile-control", proxy)
        assert "cdn.example.org" in proxy.hosts()
        proxy.asked.clear()

        out = UPath(tmp_path / "release")
        summary = write_preview(PreviewSources(stored), list(SHARDS), out, title="VisCon preview", per_mix=100)
        dom = Dom(chromium_dom(Path(out.path) / "preview.html", tmp_path / "profile", proxy))
    finally:
        proxy.shutdown()
    data_hosts = {"example.org", "cdn.example.org", "evil.example"}
    assert not proxy.hosts() & data_hosts, proxy.asked
    assert not {h for h in proxy.hosts() if not h.endswith((".google.com", ".googleapis.com"))}, proxy.asked
    assert_self_contained(dom)
    assert not dom.find("script") and dom.find("title")[0]["text"] == "VisCon preview — preview"
    assert len(dom.find("article")) == len(summary.records) == sum(RECORDS_PER_MIX.values())
    assert len(dom.find("img")) == len(summary.records)
    captions = {e["text"] for e in dom.find("blockquote", "caption")}
    assert SCRIPT_CAPTION in captions and "The Eiffel Tower at dusk during the 3th city marathon, image 1." in captions
    questions = " ".join(e["text"] for e in dom.find("li", "human"))
    assert IMG_QUESTION in questions and "Which landmark appears (m0)?\nA. Big Ben" in questions
    got = counted(dom)
    assert got["conversations (records per mix)"] == RECORDS_PER_MIX
    assert {k: got[k] for k in EXPECTED_STAGES} == EXPECTED_STAGES


# --- through the release asset -----------------------------------------------------------------------


def materialize_release(storage: StorageResource, run_config: dict | None = None):
    release = release_asset(ChainSpec(partitions_def=obelics_shards))
    with dg.instance_for_test() as instance:
        for shard in SHARDS:
            instance.report_runless_asset_event(dg.AssetMaterialization("conversations", partition=shard))
        result = dg.materialize([release], instance=instance, resources={"storage": storage, "hub": HubResource()},
                                run_config=run_config or {})
        assert result.success
        return result.asset_materializations_for_node("viscon_100k_release")[0].metadata


@pytest.mark.slow
def test_release_writes_the_preview_and_links_it(tmp_path):
    root = tmp_path / "storage"
    write_storage(UPath(root))
    storage = StorageResource(root=root.as_uri(), s3=S3Resource())
    metadata = materialize_release(storage, {"ops": {"viscon_100k_release": {"config": {
        "formats": ["llava"], "mixes": ["leaky", "mcq"], "preview_per_mix": 2, "preview_seed": 3}}}})
    html_path = Path(metadata["preview_html"].value)
    version = metadata["version"].value
    current = current_release_path(UPath(root), "viscon_100k_release")
    assert current.name == version and Path(current.path) == root / "viscon_100k_release" / "versions" / version
    assert html_path == Path(current.path) / "preview.html" and html_path.is_file()
    dom = Dom(html_path.read_text())
    assert [e["text"] for e in dom.find("p", "version")] == [f"release version {version}"]
    assert sorted(a["attrs"]["data-mix"] for a in dom.find("article")) == ["leaky", "leaky", "mcq", "mcq"]
    released = metadata["counts"].value["llava"]
    assert counted(dom)["released (mix / split)"] == {
        f"{mix} / {split}": n for mix, splits in released.items() for split, n in splits.items()}
    assert str(root) not in html_path.read_text()
    table = metadata["preview"].value.splitlines()
    assert table[0] == "| mix | page | caption | first question | leakage |"
    assert [line.split(" | ")[0] for line in table[2:]] == ["| leaky", "| mcq", "| leaky", "| mcq"]
    assert metadata["preview_records"].value == 4
    again = materialize_release(storage, {"ops": {"viscon_100k_release": {"config": {
        "formats": ["llava"], "mixes": ["leaky", "mcq"], "preview_per_mix": 2, "preview_seed": 3}}}})
    assert again["preview"].value == metadata["preview"].value  # seeded: a rerun shows the same records
    assert again["version"].value > version and again["previous_version"].value == version


@pytest.mark.slow
def test_release_on_s3_writes_the_preview_into_the_bucket(s3_server, s3_bucket):
    name, client = s3_bucket
    opts = {"client_kwargs": {"endpoint_url": s3_server}, "key": "testing", "secret": "testing"}
    write_storage(UPath(f"s3://{name}/storage", **opts))
    storage = StorageResource(root=f"s3://{name}/storage", s3=S3Resource(endpoint_url=s3_server,
                                                                         region_name="us-east-1"))
    metadata = materialize_release(storage, {"ops": {"viscon_100k_release": {"config": {"formats": ["hf"]}}}})
    version = metadata["version"].value
    pointer = client.get_object(Bucket=name, Key="storage/viscon_100k_release/CURRENT")["Body"].read()
    assert pointer == f"{version}\n".encode()
    key = f"storage/viscon_100k_release/versions/{version}/preview.html"
    assert metadata["preview_html"].value == f"s3://{name}/{key}"
    page = client.get_object(Bucket=name, Key=key)["Body"].read().decode()
    dom = Dom(page)
    assert_self_contained(dom)
    assert len(dom.find("article")) == sum(min(8, n) for n in RECORDS_PER_MIX.values())
    assert {k: counted(dom)[k] for k in EXPECTED_STAGES} == EXPECTED_STAGES
