"""Derived code versions: a prompt or a model change moves exactly the asset it shapes."""

from viscon_dagster.assets import chain
from viscon_dagster.core.chain.prompts import QA
from viscon_dagster.definitions import build_definitions
from viscon_dagster.environment import image_fetcher
from viscon_dagster.resources.models import TransformersLocalBackend


def versions(**kwargs) -> dict[str, str]:
    """The 100K chain's versions (the 1M chain shares its QA model and prompts, and moves with them)."""
    defs = build_definitions(**kwargs)
    return {k.to_user_string(): a.code_versions_by_key[k] for a in defs.assets for k in a.keys
            if k.path[0] != "viscon_1m"}


def changed(before: dict, after: dict) -> list[str]:
    return sorted(k for k in before if before[k] != after[k])


def test_versions_are_stable_across_loads():
    assert versions() == versions()


def test_an_edit_to_a_prompts_wording_moves_only_its_asset(monkeypatch):
    before, version = versions(), QA.version
    monkeypatch.setattr(QA, "template", QA.template.replace("Questions must differ", "Every question must differ"))
    assert QA.version != version and QA.version.startswith("qa-")
    assert changed(before, versions()) == ["qa_pairs"]


def test_a_model_change_moves_only_the_assets_that_call_it(tmp_path):
    before = versions()
    other = TransformersLocalBackend(model="org/another-captioner")
    assert changed(before, versions(caption_model=other)) == ["captions", "noncontextual_captions"]
    assert changed(before, versions(qa_model=other)) == ["qa_pairs"]
    tokenizer = tmp_path / "tok"
    tokenizer.mkdir()
    (tokenizer / "tokenizer.json").write_text("{}")
    assert changed(before, versions(tokenizer=str(tokenizer))) == ["captions", "filtered_docs",
                                                                   "noncontextual_captions"]


def test_an_output_setting_default_moves_its_asset(monkeypatch):
    before = versions()
    class StricterDedup(chain.DedupConfig):
        threshold: float = 0.8

    monkeypatch.setattr(chain, "DedupConfig", StricterDedup)
    assert changed(before, versions()) == ["unique_qa_pairs"]


def test_an_image_setting_moves_images_and_a_network_setting_does_not():
    before = versions()
    assert changed(before, versions(fetcher=image_fetcher().model_copy(update={"max_side": 512}))) == ["images"]
    assert changed(before, versions(fetcher=image_fetcher().model_copy(update={"concurrency": 8}))) == []



def test_a_recipe_change_moves_the_captioner_and_a_pair_rule_moves_the_pairs(monkeypatch):
    import dataclasses

    from viscon_dagster.assets import captioner, captioner_evaluation
    from viscon_dagster.core.captioner import recipes
    from viscon_dagster.environment import model_backend

    judge = model_backend("judge").model_id

    def derived() -> dict[str, str]:
        return {"captioner_training_pairs": captioner.pairs_version(), "contextual_captioner":
                captioner.captioner_version(), "captioner_evaluation": captioner_evaluation.evaluation_version(judge)}

    before = derived()
    assert {k: versions()[k] for k in before} == before  # the assets carry the derived versions
    tiny = recipes.RECIPES["tiny-demo"]
    monkeypatch.setitem(recipes.RECIPES, "tiny-demo", dataclasses.replace(tiny, learning_rate=tiny.learning_rate / 2))
    assert changed(before, derived()) == ["contextual_captioner"]
    monkeypatch.setitem(recipes.RECIPES, "tiny-demo", tiny)

    class WiderContext(captioner.PairsConfig):
        context_tokens: int = 2000

    monkeypatch.setattr(captioner, "PairsConfig", WiderContext)
    assert changed(before, derived()) == ["captioner_training_pairs"]
