import copy
import json
from pathlib import Path

from tests.exports.llava_validator import validate_llava, validate_llava_file
from viscon_dagster.core.chain.conversations import MIXES


def test_llava_json_per_mix_and_split_passes_the_validator(exported, tables):
    out, summary = exported
    folder = Path(out.path) / "llava"
    total = 0
    for mix in MIXES:
        for split in ("train", "test"):
            path = folder / mix / f"{split}.json"
            assert validate_llava_file(path, folder) == []
            records = json.loads(path.read_text())
            assert len(records) == summary.counts["llava"][mix][split]
            assert {r["mix"] for r in records} == {mix}
            total += len(records)
    assert total == sum(t.num_rows for t in tables)
    images = list((folder / "images").rglob("*.jpg"))
    assert len(images) == summary.images == 24


def test_the_validator_rejects_bad_records(exported):
    out, _ = exported
    folder = Path(out.path) / "llava"
    good = json.loads((folder / "leaky" / "train.json").read_text())
    assert validate_llava(good, folder) == []

    def broken(change):
        records = copy.deepcopy(good)
        change(records)
        return validate_llava(records, folder)

    assert broken(lambda rs: rs[0]["conversations"].reverse())
    assert broken(lambda rs: rs[0]["conversations"][2].update(value="<image>\nagain"))
    assert broken(lambda rs: rs[1].update(id=rs[0]["id"]))
    assert broken(lambda rs: rs[0].update(image="images/00/missing.jpg"))
    assert broken(lambda rs: rs[0]["conversations"].pop())
    assert validate_llava({"not": "a list"}, folder)
