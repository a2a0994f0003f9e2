"""Model provenance is a typed entry: the writer refuses malformed ones, the reader returns the
entries a store was written with, and a hostile store's entries fail with a one-line error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from storage import ModelProvenance, SchemaMismatchError, StoreSpec, Writer, open_result

SPEC = StoreSpec(height=16, width=16, source_height=16, source_width=16, tasks=("pose",))
SHA = "0123456789abcdef" * 4
POSE = ModelProvenance(
    name="sapiens-0.3b", task="pose", checkpoint_sha256=SHA, source="/w/pose_0.3b.pth"
)


def test_the_store_keeps_and_returns_typed_entries(tmp_path: Path) -> None:
    url = str(tmp_path / "p.zarr")
    tiny = {"name": "tiny", "task": "seg", "checkpoint_sha256": None, "random_weights": True}
    Writer.create(url, SPEC, job={"job_id": "p"}, models=[POSE, tiny]).finalize()
    reader = open_result(url)
    assert reader.models == [POSE, ModelProvenance(name="tiny", task="seg", random_weights=True)]
    assert reader.attrs["models"][0] == {
        "name": "sapiens-0.3b",
        "task": "pose",
        "checkpoint_sha256": SHA,
        "random_weights": False,
        "source": "/w/pose_0.3b.pth",
    }


def test_a_licence_is_kept_with_its_entry(tmp_path: Path) -> None:
    url = str(tmp_path / "l.zarr")
    terms = "Sapiens2 License: prohibits surveillance, biometric processing; see the licence"
    entry = ModelProvenance(name="sapiens2-0.4b", task="pose", licence=terms)
    Writer.create(url, SPEC, job={"job_id": "l"}, models=[entry, POSE]).finalize()
    reader = open_result(url)
    assert reader.models == [entry, POSE]
    assert reader.attrs["models"][0]["licence"] == terms
    assert "licence" not in reader.attrs["models"][1]  # as stored before licences existed


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        ({"name": "x", "task": "pose"}, "lacks keys"),
        ({**POSE.to_dict(), "extra": 1}, "unknown keys"),
        ({**POSE.to_dict(), "checkpoint_sha256": "ABC"}, "64 lower-case hex"),
        ({**POSE.to_dict(), "random_weights": "yes"}, "expected a bool"),
        ({**POSE.to_dict(), "name": ""}, "one-line string"),
        ({**POSE.to_dict(), "source": "a\nb"}, "one-line string"),
        ({**POSE.to_dict(), "licence": "a\nb"}, "one-line string"),
        ({**POSE.to_dict(), "task": None}, "one-line string"),
        ("sapiens", "expected a mapping"),
    ],
)
def test_malformed_entries_are_refused_when_written(
    tmp_path: Path, entry: object, match: str
) -> None:
    with pytest.raises(SchemaMismatchError, match=match):
        Writer.create(str(tmp_path / "bad.zarr"), SPEC, job={"job_id": "b"}, models=[entry])
    assert not (tmp_path / "bad.zarr" / "zarr.json").exists()


def test_a_hostile_stores_entries_fail_on_read(tmp_path: Path) -> None:
    url = tmp_path / "h.zarr"
    Writer.create(str(url), SPEC, job={"job_id": "h"}, models=[POSE]).finalize()
    root = json.loads((url / "zarr.json").read_text())
    root["attributes"]["sapiens_stream"]["models"] = [{"name": "x", "task": "pose", "rm": 1}]
    (url / "zarr.json").write_text(json.dumps(root))
    with pytest.raises(SchemaMismatchError, match="lacks keys"):
        _ = open_result(str(url)).models
