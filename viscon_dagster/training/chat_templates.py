"""Training chat templates for conversation SFT: the base model's template with `{% generation %}` markers
around each assistant turn (its end-of-turn token included), so TRL's `assistant_only_loss` puts the loss on
the assistant's words and its stop token only — every assistant turn of a multi-turn LLaVA record, in one pass.

TRL patches the templates it knows (`trl.chat_template_utils.get_training_chat_template`: Idefics3, SmolVLM,
LLaVA-NeXT, Qwen2.5-VL, …); a recipe whose base template is not among them names one of these
(`Recipe.training_chat_template`). Each renders exactly the text of its base template (tests/ablation checks
the ChatML one against the tiny model's), so what the model learns is what it is later prompted with.
"""

from __future__ import annotations

_CONTENT = ("{% if message['content'] is string %}{{ message['content'] }}{% else %}"
            "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}"
            "{% elif part['type'] == 'image' or part['type'] == 'image_url' %}{{ '<image>' }}{% endif %}"
            "{% endfor %}{% endif %}")

# The tiny models' ChatML template (demo/tiny_models.VLM_CHAT_TEMPLATE), SmolVLM's family.
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['role'] == 'assistant' %}{% generation %}" + _CONTENT + "{{ '<|im_end|>\n' }}{% endgeneration %}"
    "{% else %}" + _CONTENT + "{{ '<|im_end|>\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# IDEFICS2's template (HuggingFaceM4/idefics2-8b: `User:<image>text<end_of_utterance>\nAssistant: text…`), the
# assistant turn wrapped as TRL wraps Idefics3's (which differs only by a leading <|begin_of_text|>).
IDEFICS2 = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}Assistant:{% generation %}"
    "{% if message['content'][0]['type'] != 'image' %} {% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endgeneration %}"
    "{% else %}{{ message['role'].capitalize() }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

TRAINING_TEMPLATES = {"chatml": CHATML, "idefics2": IDEFICS2}


def training_template(name: str) -> str:
    try:
        return TRAINING_TEMPLATES[name]
    except KeyError:
        raise KeyError(f"unknown training chat template {name!r}; known: {sorted(TRAINING_TEMPLATES)}") from None
