from viscon_dagster.core.models.request import ImageRef, Request, SamplingParams

SCHEMA = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}


def req(text="describe", sha="aa" * 32, url="file:///a.png", **kw):
    return Request.user(text, [ImageRef(url=url, sha256=sha)], **kw)


def test_fingerprint_is_stable_and_ignores_image_location_and_meta():
    a = req().fingerprint("m")
    assert a == req().fingerprint("m")
    assert len(a) == 64
    assert req(url="s3://bucket/elsewhere.png").fingerprint("m") == a
    assert Request.user("describe", [ImageRef(url="file:///a.png", sha256="aa" * 32)],
                        meta={"doc": "x"}).fingerprint("m") == a


def test_fingerprint_changes_with_everything_that_changes_the_answer():
    base = req().fingerprint("m")
    variants = [
        req().fingerprint("other-model"),
        req(text="describe!").fingerprint("m"),
        req(sha="bb" * 32).fingerprint("m"),
        req(params=SamplingParams(temperature=0.7)).fingerprint("m"),
        req(params=SamplingParams(max_tokens=7)).fingerprint("m"),
        req(json_schema=SCHEMA).fingerprint("m"),
        req(system="be brief").fingerprint("m"),
    ]
    assert len({base, *variants}) == len(variants) + 1


def test_image_ref_reads_from_storage(image_ref):
    data = image_ref.read_bytes()
    assert data.startswith(b"\x89PNG")
    assert image_ref.data_url().startswith("data:image/png;base64,")
    assert image_ref.pil().size == (40, 30)
