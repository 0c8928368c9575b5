import json

import pytest

from viscon_dagster.core.documents.obelics import END_MARKER, Doc, Reject, doc_id_for, parse_record


def record(texts, images, meta=None, general=None):
    meta = meta if meta is not None else [
        {"src": im, "alt_text": f"alt {i}", "original_width": 300, "original_height": 200} if im else None
        for i, im in enumerate(images)]
    return {"texts": texts, "images": images,
            "metadata": meta if isinstance(meta, str) else json.dumps(meta),
            "general_metadata": general if general is not None else json.dumps({"url": "https://a.example/p"})}


def test_valid_record_parses_with_image_info_and_stripped_marker():
    doc = parse_record(record(["Title", None, "Body text " + END_MARKER], [None, "http://i/x.jpg", None]))
    assert isinstance(doc, Doc)
    assert doc.texts == ["Title", None, "Body text"]
    assert doc.image_info[0].position == 1 and doc.image_info[0].alt_text == "alt 1"
    assert doc.doc_id == doc_id_for("https://a.example/p")
    assert END_MARKER not in doc.text


def test_marker_only_text_position_is_dropped_and_images_renumbered():
    doc = parse_record(record([END_MARKER, None, "Text"], [None, "http://i/x.jpg", None]))
    assert doc.texts == [None, "Text"] and doc.images == ["http://i/x.jpg", None]
    assert doc.image_info[0].position == 0


@pytest.mark.parametrize("row,reason", [
    ({"texts": None, "images": []}, "bad_schema"),
    (record(["a", None], [None]), "length_mismatch"),
    (record(["a", "b"], [None, "http://i/x.jpg"]), "both_text_and_image"),
    (record(["a", None], [None, None]), "empty_position"),
    (record(["a", None], [None, "http://i/x.jpg"], meta='[{"src": '), "invalid_metadata_json"),
    (record(["a", None], [None, "http://i/x.jpg"], meta=[None]), "metadata_length_mismatch"),
    (record(["a", None], [None, "http://i/x.jpg"], general="{not json"), "invalid_general_metadata_json"),
    (record(["a", None], [None, "http://i/x.jpg"], general=json.dumps({"warc_filename": "w"})), "missing_url"),
])
def test_each_schema_fault_is_a_reject_with_its_reason(row, reason):
    result = parse_record(row)
    assert isinstance(result, Reject)
    assert result.reason == reason and result.detail
