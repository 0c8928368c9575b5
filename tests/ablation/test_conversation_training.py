"""Conversation SFT for the ablation's target: the loss on every assistant turn and nothing else, the training
template renders what the served one does, and the scorer's letters and batches are consistent."""

from __future__ import annotations

import io
from dataclasses import replace

import pytest
from PIL import Image

from viscon_dagster.core.ablation.scoring import Scorer, letter_token_ids, mcq_messages
from viscon_dagster.core.ablation.training_rows import to_messages, write_conversation_file
from viscon_dagster.core.captioner.recipes import ABLATION_RECIPES, RECIPES, Recipe
from viscon_dagster.core.captioner.training_data import load_training_file
from viscon_dagster.demo.tiny_models import VLM_CHAT_TEMPLATE
from viscon_dagster.training.chat_templates import CHATML
from viscon_dagster.training.train_captioner import load_processor, sft_config

TURNS = [{"from": "human", "value": "<image>\nDescribe the picture."}, {"from": "gpt", "value": "a red square ."},
         {"from": "human", "value": "Which colour?\nA. red\nB. blue"}, {"from": "gpt", "value": "A"}]


def jpeg(colour: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), colour).save(buf, "JPEG")
    return buf.getvalue()


def test_captioner_recipes_are_unchanged_by_tasks():
    # the fingerprints the captioner recipes had before recipes named a task (their checkpoints keep their keys)
    assert {n: r.fingerprint() for n, r in RECIPES.items()} == {"tiny-demo": "9098278d9dd9",
                                                                "smolvlm-256m": "d87930573b74"}
    assert all("task" not in r.as_dict() for r in RECIPES.values())
    tiny = ABLATION_RECIPES["tiny-ablation"]
    assert Recipe.from_dict(tiny.as_dict()) == tiny and tiny.as_dict()["task"] == "conversation"
    with pytest.raises(ValueError, match="unknown task"):
        replace(tiny, task="dpo")


def test_llava_turns_become_chat_messages():
    messages = to_messages(TURNS)
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[0]["content"][0]["type"] == "image" and messages[0]["content"][1]["text"] == "Describe the picture."
    assert all(p["type"] == "text" for m in messages[1:] for p in m["content"])
    with pytest.raises(ValueError, match="first turn"):
        to_messages([{"from": "human", "value": "no image"}, {"from": "gpt", "value": "x"}])


def test_training_template_renders_the_served_text(tiny_student_dir):
    processor = load_processor(str(tiny_student_dir), ABLATION_RECIPES["tiny-ablation"])
    assert processor.chat_template == VLM_CHAT_TEMPLATE
    messages = to_messages(TURNS)
    served = processor.apply_chat_template(messages)
    prompt = processor.apply_chat_template(messages[:1], add_generation_prompt=True)
    processor.chat_template = CHATML
    assert processor.apply_chat_template(messages) == served
    assert processor.apply_chat_template(messages[:1], add_generation_prompt=True) == prompt


def test_only_assistant_turns_carry_labels(tiny_student_dir, tmp_path):
    from transformers import AutoModelForImageTextToText
    from trl import SFTTrainer

    recipe = ABLATION_RECIPES["tiny-ablation"]
    path = tmp_path / "rows.parquet"
    assert write_conversation_file([({"conversations": TURNS}, jpeg("red"))] * 4, path) == 4
    processor = load_processor(str(tiny_student_dir), recipe)
    processor.chat_template = CHATML  # as train() does for the recipe's training_chat_template
    trainer = SFTTrainer(model=AutoModelForImageTextToText.from_pretrained(tiny_student_dir),
                         args=sft_config(recipe, str(tmp_path / "out"), use_cpu=True),
                         train_dataset=load_training_file(path), processing_class=processor)
    batch = next(iter(trainer.get_train_dataloader()))
    tok = processor.tokenizer
    image_id = tok.convert_tokens_to_ids("<image>")
    images = batch["input_ids"] == image_id
    assert images.sum() > 0 and (batch["labels"][images] == -100).all()
    for ids, labels in zip(batch["input_ids"], batch["labels"]):
        labelled = tok.decode(ids[labels != -100].tolist())
        assert labelled == "a red square .<|im_end|>\nA<|im_end|>\n", labelled  # both answers, each with its stop
        masked = tok.decode(ids[labels == -100].tolist())
        assert "Describe the picture." in masked and "Which colour?" in masked


def test_scorer_letters_and_batches(tiny_student_dir):
    processor = load_processor(str(tiny_student_dir), ABLATION_RECIPES["tiny-ablation"])
    ids = letter_token_ids(processor)
    assert [processor.tokenizer.decode([i]) for i in ids] == ["A", "B", "C", "D"]
    prompt = processor.apply_chat_template(mcq_messages("Which colour?", ["red", "green", "blue", "white"]),
                                           add_generation_prompt=True)
    assert prompt.endswith("Answer with the option's letter from the given choices directly.<|im_end|>\n"
                           "<|im_start|>assistant\n") and "\nC. blue\n" in prompt
    items = [{"item_id": str(k), "question": "Which colour" + "?" * (k + 1), "options": ["red", "green", "blue", "x"],
              "answer": "ABCD"[k % 4]} for k in range(5)]  # different lengths: left padding matters
    images = [jpeg(c) for c in ("red", "green", "blue", "white", "black")]
    scorer = Scorer(str(tiny_student_dir), device="cpu")
    one = scorer.score(items, images, batch_size=1)
    many = scorer.score(items, images, batch_size=4)
    assert [r["predicted"] for r in one] == [r["predicted"] for r in many]
    for a, b in zip(one, many):
        assert a["letter_logprobs"] == pytest.approx(b["letter_logprobs"], abs=1e-3)
        assert a["correct"] == (a["predicted"] == a["answer"])
    greedy = scorer.score(items[:2], images[:2], method="greedy", batch_size=2)
    assert all(r["letter_logprobs"] is None and isinstance(r["response"], str) for r in greedy)
