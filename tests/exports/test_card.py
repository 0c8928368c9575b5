import yaml

from viscon_dagster.core.chain.leakage import leakage_summary
from viscon_dagster.core.exports.card import leakage_by_kind, render_card


def test_card_takes_a_flat_leakage_summary_and_condenses_long_lineage():
    counts = {"captions": {"train": 5}, "mcq": {"train": 3, "test": 1}}
    lineage = {"caption_model": ["m1"], "shard": [f"shard-{i:02d}" for i in range(45)]}
    card = render_card(counts, lineage, leakage_summary([0.0, 0.5, 1.0]), default_mix="leaky")
    front = yaml.safe_load(card.split("---")[1])
    configs = {c["config_name"]: c for c in front["configs"]}
    # no leaky config in this export: the first mix becomes the default; a split without records is counted but
    # not declared (`datasets` cannot load an empty split), and the card says so
    assert configs["captions"]["default"] is True and "default" not in configs["mcq"]
    assert configs["captions"]["data_files"] == [{"split": "train", "path": "data/captions/train-*.parquet"}]
    assert [f["split"] for f in configs["mcq"]["data_files"]] == ["train", "test"]
    assert "| `captions` (default) | 5 | 0 | 5 |" in card and "| `mcq` | 3 | 1 | 4 |" in card
    assert "but `captions` test has no record" in card
    assert "| all | 3 | 0.5 | 0.5 | 0.3333 | 0.3333 |" in card  # + share_fully_answerable, share_unanswerable
    assert "45 values, `shard-00` … `shard-44`" in card
    assert "Not computed" in render_card(counts, lineage, None)


def test_leakage_summary_per_kind():
    rows = [{"free_form": [{"leakage": 0.2}, {"leakage": 0.4}], "mcq": [{"leakage": 1.0}]}, {"free_form": None}]
    s = leakage_by_kind(rows)
    assert s["free_form"] == {"count": 2, "mean": 0.3, "median": 0.3}
    assert s["all"]["count"] == 3 and s["mcq"]["median"] == 1.0
    assert leakage_by_kind([]) == {"free_form": {"count": 0}, "mcq": {"count": 0}, "all": {"count": 0}}
