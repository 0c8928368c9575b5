"""Joining a shard's captions and de-duplicated Q&A into one sample per image (stage 8's input)."""

from __future__ import annotations

from collections import defaultdict

import pyarrow as pa

from viscon_dagster.core.chain.prompts import CAPTION, QA


def image_samples(captions: pa.Table, unique_qa: pa.Table, noncontextual: pa.Table | None = None) -> list[dict]:
    """One sample per `ok` caption, with its kept Q&A items and, when made, its non-contextual caption."""
    qa_by_image: dict[tuple, dict[str, list]] = defaultdict(lambda: {"free_form": [], "mcq": []})
    qa_model = None
    for q in unique_qa.filter(unique_qa["kept"]).to_pylist():
        item = {"question": q["question"], "answer": q["answer"], "leakage": q["leakage"]}
        if q["kind"] == "mcq":
            item["options"] = q["options"]
        qa_by_image[(q["doc_id"], q["position"])][q["kind"]].append(item)
        qa_model = q["qa_model"]
    control = {}
    if noncontextual is not None:
        for c in noncontextual.filter(pa.compute.equal(noncontextual["status"], "ok")).to_pylist():
            control[c["image_sha256"]] = (c["caption"], c["caption_model"])
    samples = []
    for c in captions.filter(pa.compute.equal(captions["status"], "ok")).to_pylist():
        qa = qa_by_image.get((c["doc_id"], c["position"]), {"free_form": [], "mcq": []})
        nc_caption, nc_model = control.get(c["image_sha256"], (None, None))
        samples.append({
            "shard": c["shard"], "doc_id": c["doc_id"], "doc_url": c["doc_url"], "image_url": c["image_url"],
            "image_sha256": c["image_sha256"], "image_path": c["image_path"], "caption": c["caption"],
            "caption_model": c["caption_model"],
            "caption_prompt_version": c["prompt_version"] or CAPTION.version,
            "noncontextual_caption": nc_caption, "noncontextual_caption_model": nc_model,
            "qa_model": qa_model, "qa_prompt_version": QA.version,
            "free_form": qa["free_form"], "mcq": qa["mcq"],
        })
    return samples
