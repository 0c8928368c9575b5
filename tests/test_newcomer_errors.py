"""A newcomer's first mistakes get a message that says what is missing and the command that makes it."""

import dagster as dg
import pytest

from tests.conftest import materialize_partition
from viscon_dagster.core.models.labels import is_local_path
from viscon_dagster.definitions import build_definitions
from viscon_dagster.resources.local_models import require_local_model
from viscon_dagster.resources.shard_source import record_shards


def step_failure_message(result) -> str:
    failures = result.get_step_failure_events()
    assert failures, "the run was expected to fail"
    error, messages = failures[0].step_failure_data.error, []
    while error is not None:  # the user's cause sits below Dagster's "Error occurred while executing op"
        messages.append(error.message)
        error = error.cause
    return "\n".join(messages)


@pytest.mark.slow
def test_fresh_home_without_tiny_models_names_the_command(tmp_path, sample_dir):
    # VISCON_HOME is a fresh folder (conftest): the default tokenizer, the tiny LM, was never built
    defs = build_definitions(storage_root=(tmp_path / "store").as_uri())
    keys = record_shards(defs.resources["storage"], str(sample_dir / "shards"))
    with dg.instance_for_test() as instance:
        result = materialize_partition(defs, ["filtered_docs"], keys[0], instance, raise_on_error=False)
    assert not result.success
    message = step_failure_message(result)
    assert "tiny-lm" in message and "does not exist" in message
    assert "`viscon models tiny`" in message and "VISCON_TOKENIZER" in message
    assert "Repo id must be" not in message


@pytest.mark.parametrize("name, local", [("/abs/models/tiny-lm", True), ("./ckpt", True), ("~/ckpt", True),
                                         ("openchat/openchat-3.5-0106", False), ("gpt-4o", False)])
def test_hub_ids_are_not_taken_for_paths(name, local):
    assert is_local_path(name) is local


def test_existing_folder_passes_and_a_hub_id_is_left_to_the_hub(tmp_path):
    require_local_model(str(tmp_path), "the model", "VISCON_CAPTION_MODEL")
    require_local_model("HuggingFaceTB/SmolVLM-256M-Instruct", "the model", "VISCON_CAPTION_MODEL")
    with pytest.raises(dg.Failure, match="VISCON_CAPTION_MODEL"):
        require_local_model(str(tmp_path / "missing"), "the model", "VISCON_CAPTION_MODEL")


@pytest.mark.slow
def test_an_unregistered_shard_says_how_to_register(tmp_path, tokenizer_dir):
    defs = build_definitions(storage_root=(tmp_path / "store").as_uri(), tokenizer=str(tokenizer_dir))
    with dg.instance_for_test() as instance:
        result = materialize_partition(defs, ["filtered_docs"], "never-registered", instance, raise_on_error=False)
    message = step_failure_message(result)
    assert "shard 'never-registered' is not registered" in message
    assert "`viscon shards register SOURCE`" in message and "`viscon demo`" in message


def test_vllm_backend_without_the_extra_says_how_to_install(monkeypatch, tmp_path):
    import builtins

    from viscon_dagster.core.models.failures import ModelServiceError
    from viscon_dagster.core.models.request import Request
    from viscon_dagster.resources.models import VLLMOfflineBackend

    real_import = builtins.__import__

    def no_vllm(name, *args, **kwargs):  # vLLM may be installed here: make it absent for this test
        if name == "vllm" or name.startswith("vllm."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_vllm)
    with pytest.raises(ModelServiceError, match=r"\[gpu\] extra") as failed:
        VLLMOfflineBackend(model="HuggingFaceTB/SmolVLM-256M-Instruct").generate(
            [Request.user("hi")], journal_dir=tmp_path / "journal")
    assert "setup_vllm_cpu.sh" in str(failed.value)


def test_a_missing_tiny_student_names_the_command_that_builds_it(tiny_student_dir):
    from viscon_dagster.assets.captioner import base_model_path
    from viscon_dagster.core.captioner.recipes import recipe

    with pytest.raises(dg.Failure) as failed:  # VISCON_HOME is fresh (conftest): nothing built there
        base_model_path(recipe("tiny-demo"), None)
    message = str(failed.value)
    assert "tiny-student" in message and "does not exist" in message and "`viscon models tiny`" in message
    assert base_model_path(recipe("tiny-demo"), str(tiny_student_dir)) == str(tiny_student_dir)
