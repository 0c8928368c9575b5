"""A published model folder names its base model by label, not by the path the training machine loaded it from."""

import json

from viscon_dagster.core.captioner.portable import name_base_by_label


def test_the_adapter_names_its_base_by_label(tmp_path):
    base = "/home/someone/.viscon/models/tiny-student"
    model = tmp_path / "model"
    (model / "adapter").mkdir(parents=True)
    (model / "adapter" / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base, "r": 8}))
    (model / "adapter" / "README.md").write_text(f"---\nbase_model: {base}\n---\n")
    (model / "model.safetensors").write_bytes(b"\x00" + base.encode())  # weights are never rewritten
    changed = name_base_by_label(model, base, "tiny-student@1a2b3c4d5e")
    assert changed == ["adapter/README.md", "adapter/adapter_config.json"]
    config = json.loads((model / "adapter" / "adapter_config.json").read_text())
    assert config == {"base_model_name_or_path": "tiny-student@1a2b3c4d5e", "r": 8}
    assert base not in (model / "adapter" / "README.md").read_text()
    assert name_base_by_label(model, base, "tiny-student@1a2b3c4d5e") == []  # nothing left to change
