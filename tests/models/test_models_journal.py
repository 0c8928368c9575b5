from viscon_dagster.core.models.journal import Journal
from viscon_dagster.core.models.request import Response


def resp(fp, status="ok", text="t"):
    return Response(fingerprint=fp, model="m", backend="b", status=status, text=text)


def test_put_load_compact_roundtrip(storage_root):
    j = Journal(storage_root / "journal")
    j.put(resp("a"))
    j.put(resp("b", status="refused"))
    j.put(resp("c", status="error"))  # errors are not answers: never journaled
    assert set(Journal(storage_root / "journal").load()) == {"a", "b"}
    assert j.compact() == 2
    assert not list((storage_root / "journal" / "entries").iterdir())
    j.put(resp("d"))
    again = Journal(storage_root / "journal").load()
    assert set(again) == {"a", "b", "d"} and again["b"].status == "refused"


def test_torn_entry_is_ignored(storage_root):
    j = Journal(storage_root / "journal")
    j.put(resp("a"))
    (storage_root / "journal" / "entries" / "zz.json").write_text('{"fingerprint": "zz", "mod')
    assert set(Journal(storage_root / "journal").load()) == {"a"}


def test_state(storage_root):
    j = Journal(storage_root / "journal")
    assert j.get_state("batch-1") is None
    j.put_state("batch-1", {"id": "batch_x"})
    assert Journal(storage_root / "journal").states("batch-") == {"batch-1": {"id": "batch_x"}}
    j.delete_state("batch-1")
    assert j.get_state("batch-1") is None


def test_group_writes_load_and_compact(storage_root):
    j = Journal(storage_root / "journal")
    j.put_many([resp("a"), resp("b"), resp("x", status="error")])
    assert len(list((storage_root / "journal" / "entries").iterdir())) == 1
    assert set(Journal(storage_root / "journal").load()) == {"a", "b"}
    assert j.compact() == 2 and set(Journal(storage_root / "journal").load()) == {"a", "b"}
