"""Nothing read from Redis or from a result store is ever unpickled.

Two kinds of evidence:

* a static scan (AST) of ``storage/``, ``flows/`` and ``actors/`` for calls that deserialise
  code-bearing formats (pickle and its relatives, ``torch.load`` without ``weights_only=True``,
  unsafe YAML, ``eval``/``exec``), and of ``models/`` where the only pickle loader allowed is the
  restricted one of ``models/_unpickle.py``;
* behaviour: live payloads (pickles that create a file when loaded, checked to work by the
  ``live_payloads`` fixture) are planted in every place the coordinator and the reader read, and
  reading them must give a clear error or inert bytes, never the file.
"""

from __future__ import annotations

import ast
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from storage import (
    Coordinator,
    InvalidValueError,
    StorageError,
    StoreSpec,
    Writer,
    open_result,
)
from storage.synthetic import synthetic_frame

ROOT = Path(__file__).resolve().parents[2]

# -- static scan ----------------------------------------------------------------------------------

#: Calls that turn bytes into arbitrary objects (or run code) whatever the arguments.
UNSAFE_CALLS = frozenset(
    f"{module}.{name}"
    for module in ("pickle", "_pickle", "cPickle", "cloudpickle", "ray.cloudpickle", "dill")
    for name in ("load", "loads", "Unpickler", "_load", "_loads", "_Unpickler")
) | {
    "marshal.load",
    "marshal.loads",
    "shelve.open",
    "jsonpickle.decode",
    "joblib.load",
    "pandas.read_pickle",
    "yaml.unsafe_load",
    "yaml.full_load",
    "torch.jit.load",
    "torch.export.load",
    "torch.package.PackageImporter",
    "eval",
    "exec",
    "builtins.eval",
    "builtins.exec",
}
PICKLE_MODULES = frozenset(
    {"pickle", "_pickle", "cPickle", "cloudpickle", "ray.cloudpickle", "dill", "marshal"}
)


def _aliases(tree: ast.Module) -> dict[str, str]:
    """Local name -> dotted name it stands for, from the module's absolute imports."""
    out: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.asname:
                    out[a.asname] = a.name
                else:
                    out[a.name.split(".")[0]] = a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for a in node.names:
                out[a.asname or a.name] = f"{node.module}.{a.name}"
    return out


def _dotted(node: ast.AST, aliases: dict[str, str]) -> str | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([aliases.get(node.id, node.id), *reversed(parts)])


def _kw(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_true(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def unsafe_loads(source: str, *, restricted_pickle_module: str | None = None) -> list[str]:
    """Every call in ``source`` that may deserialise code, as ``line: description``.

    ``restricted_pickle_module``: a dotted module name accepted as ``torch.load``'s
    ``pickle_module`` (the restricted unpickler); None accepts only ``weights_only=True``.
    """
    tree = ast.parse(source)
    aliases = _aliases(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):  # a home-made unpickler
            for base in node.bases:
                name = _dotted(base, aliases) or ""
                if name.rsplit(".", 1)[-1].endswith("Unpickler"):
                    found.append(f"{node.lineno}: class {node.name}({name})")
            continue
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func, aliases)
        if name is None:
            continue
        if name in UNSAFE_CALLS:
            found.append(f"{node.lineno}: {name}()")
        elif name in ("__import__", "importlib.import_module") and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and arg.value in PICKLE_MODULES:
                found.append(f"{node.lineno}: {name}({arg.value!r})")
        elif name == "getattr" and len(node.args) >= 2:
            target = _dotted(node.args[0], aliases)
            if target in PICKLE_MODULES:
                found.append(f"{node.lineno}: getattr({target}, ...)")
        elif name == "torch.load":
            if _is_true(_kw(node, "weights_only")):
                continue
            module = _kw(node, "pickle_module")
            module_name = _dotted(module, aliases) if module is not None else None
            if restricted_pickle_module is None or module_name != restricted_pickle_module:
                found.append(f"{node.lineno}: torch.load() without weights_only=True")
        elif name == "numpy.load" and _is_true(_kw(node, "allow_pickle")):
            found.append(f"{node.lineno}: numpy.load(allow_pickle=True)")
        elif name == "yaml.load":
            loader = _dotted(_kw(node, "Loader") or ast.Constant(None), aliases) or ""
            if not loader.endswith(("SafeLoader", "CSafeLoader", "BaseLoader")):
                found.append(f"{node.lineno}: yaml.load() without a safe Loader")
    return found


def _sources(package: str) -> Iterator[Path]:
    yield from sorted((ROOT / package).rglob("*.py"))


def test_the_scanner_finds_every_spelling_of_an_unsafe_load() -> None:
    source = """
import pickle, torch, numpy as np, yaml
import pickle as pk
from pickle import loads as decode
from ray import cloudpickle
import marshal
pickle.loads(b"")
pk.load(f)
decode(b"")
cloudpickle.loads(b"")
marshal.loads(b"")
torch.load(p)
torch.load(p, weights_only=False)
torch.load(p, pickle_module=pickle)
np.load(p, allow_pickle=True)
yaml.load(s, Loader=yaml.Loader)
eval("1")
__import__("pickle")
getattr(pickle, "loads")
class Mine(pickle.Unpickler): pass
torch.jit.load(p)
class Pure(pickle._Unpickler): pass
pickle._loads(b"")
torch.export.load(p)
"""
    found = unsafe_loads(source)
    assert sorted(int(f.split(":")[0]) for f in found) == list(range(7, 25)), found
    safe = """
import torch, numpy as np, yaml, json
torch.load(p, weights_only=True)
np.load(p)
yaml.load(s, Loader=yaml.SafeLoader)
yaml.safe_load(s)
json.loads(s)
model.eval()
"""
    assert unsafe_loads(safe) == []


@pytest.mark.parametrize("package", ["storage", "flows", "actors"])
def test_no_code_bearing_deserialisation_in_storage_flows_actors(package: str) -> None:
    found = {
        str(path.relative_to(ROOT)): hits
        for path in _sources(package)
        if (hits := unsafe_loads(path.read_text()))
    }
    assert found == {}


def test_models_load_pickles_only_through_the_restricted_unpickler() -> None:
    """In models/, ``torch.load`` takes ``weights_only=True`` or ``models._unpickle``, and the only
    unpickler is the class of models/_unpickle.py. Nothing calls ``torch.jit.load`` or
    ``torch.export.load``: TorchScript and torch.export archives carry code, so they are read as
    data (models/_archive.py, models/_pt2.py), never loaded."""
    allowed = {"models/_unpickle.py": "class Unpickler(pickle._Unpickler)"}
    found = {}
    for path in _sources("models"):
        rel = str(path.relative_to(ROOT))
        hits = unsafe_loads(path.read_text(), restricted_pickle_module="models._unpickle")
        hits = [h for h in hits if rel not in allowed or not h.endswith(allowed[rel])]
        if hits:
            found[rel] = hits
    assert found == {}


# -- Redis: the job registry, events, heartbeats, queue, idempotency keys ------------------------

HASH_FIELDS = [
    "spec",
    "meta",
    "result",
    "error",
    "state",
    "committed_frames",
    "attempts",
    "token",
    "created_ms",
    "cancel",
    "n:decoded_frames",
    "owner",
]


def _poisoned_payloads(live_payloads: dict[str, bytes]) -> dict[str, bytes]:
    # Protocol 0 is printable text (it survives every decode step), 5 is binary.
    return {k: v for k, v in live_payloads.items() if k in ("open-p0", "system-p0", "open-p5")}


@pytest.mark.redis
@pytest.mark.parametrize("field", HASH_FIELDS)
def test_job_hash_fields_holding_a_pickle_are_refused(
    coord: Coordinator, live_payloads: dict[str, bytes], field: str
) -> None:
    for name, payload in _poisoned_payloads(live_payloads).items():
        job_id = coord.submit({"source": "a.mp4"}).job_id
        coord.client.hset(coord.keys.job(job_id), field, payload)
        try:
            record = coord.get(job_id)
        except InvalidValueError as e:
            assert job_id in str(e), (name, str(e))
            assert field in str(e), (name, str(e))
            with pytest.raises(InvalidValueError):
                coord.list_jobs(limit=1000)  # one bad record: a clear error, never a load
        else:  # a free-text or flag field may come back as the (inert) text itself
            assert field in ("owner", "cancel"), (name, record)
            assert not record.cancel_requested
        coord.client.delete(coord.keys.job(job_id))


@pytest.mark.redis
@pytest.mark.parametrize(
    "field",
    [
        "data",
        "ts",
    ],
)
def test_event_stream_entries_holding_a_pickle_are_refused(
    coord: Coordinator, live_payloads: dict[str, bytes], field: str
) -> None:
    import msgpack

    for payload in _poisoned_payloads(live_payloads).values():
        job_id = coord.submit({"source": "a.mp4"}).job_id
        entry = {"type": "progress", "ts": "1", "data": msgpack.packb({"x": 1})}
        entry[field] = payload
        coord.client.xadd(coord.keys.events(job_id), entry)
        with pytest.raises(InvalidValueError, match=job_id):
            coord.events(job_id)


@pytest.mark.redis
def test_a_worker_heartbeat_holding_a_pickle_is_refused(
    coord: Coordinator, live_payloads: dict[str, bytes]
) -> None:
    for payload in live_payloads.values():
        coord.client.set(coord.keys.worker("evil-worker"), payload)
        with pytest.raises(InvalidValueError, match="evil-worker"):
            coord.workers()


@pytest.mark.redis
def test_a_queue_entry_naming_a_pickle_is_dropped_text_payload(
    coord: Coordinator, live_payloads: dict[str, bytes]
) -> None:
    coord.submit({"source": "a.mp4"}, job_id="first")  # creates the consumer group
    assert coord.claim("w1").job_id == "first"
    coord.client.xadd(coord.keys.queue, {"job": live_payloads["open-p0"]})
    assert coord.claim("w1") is None  # not a valid job id: acknowledged and dropped
    assert coord.client.xpending(coord.keys.queue, coord.config.group)["pending"] == 1  # first


@pytest.mark.redis
def test_a_queue_entry_naming_a_binary_pickle_is_dropped(
    coord: Coordinator, live_payloads: dict[str, bytes]
) -> None:
    coord.submit({"source": "a.mp4"}, job_id="first")
    assert coord.claim("w1").job_id == "first"
    coord.client.xadd(coord.keys.queue, {"job": live_payloads["open-p5"]})
    coord.client.xadd(coord.keys.queue, {"not-job": b"x"})
    coord.submit({"source": "b.mp4"}, job_id="second")
    assert coord.claim("w1").job_id == "second"


@pytest.mark.redis
def test_a_poisoned_idempotency_mapping_is_refused(
    coord: Coordinator, live_payloads: dict[str, bytes]
) -> None:
    for name, payload in _poisoned_payloads(live_payloads).items():
        coord.client.set(coord.keys.idempotency(name), payload)
        with pytest.raises(StorageError):
            coord.submit({"source": "a.mp4"}, client_key=name)


@pytest.mark.redis
def test_claiming_a_job_with_a_pickled_spec_is_a_clear_error(
    coord: Coordinator, live_payloads: dict[str, bytes]
) -> None:
    job_id = coord.submit({"source": "a.mp4"}).job_id
    coord.client.hset(coord.keys.job(job_id), "spec", live_payloads["system-p4"])
    assert coord.claim("w1") is None  # the record is refused, not run ...
    record = coord.client.hget(coord.keys.job(job_id), "state")
    assert record == b"failed"  # ... and the job fails at once, naming the field
    with pytest.raises(InvalidValueError, match=rf"{job_id}.*'spec'"):
        coord.get(job_id)


@pytest.mark.redis
def test_a_poisoned_job_does_not_stop_the_service(
    coord: Coordinator, live_payloads: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service loop without Ray: jobs it claims are recorded, not run. The service must
    survive the bad record, run the next job, and the bad job must end failed at once."""
    import flows.raylocal
    from flows.pool import ScalePolicy
    from flows.service import JobService

    monkeypatch.setattr(flows.raylocal, "ensure_ray", lambda address=None, **_: None)
    monkeypatch.setattr(flows.raylocal, "exit_on_sigterm", lambda: None)
    bad = coord.submit({"source": "a.mp4"}).job_id
    coord.client.hset(coord.keys.job(bad), "spec", live_payloads["open-p5"])
    good = coord.submit({"source": "b.mp4"}).job_id
    started: list[str] = []
    service = JobService(
        coord, worker_id="sec-serve", policy=ScalePolicy(actor_gpus=0), scale_interval_s=3600
    )

    def record(lease):  # instead of running the job on Ray
        started.append(lease.job_id)
        coord.complete(lease, result={})

    monkeypatch.setattr(service, "_start", record)
    monkeypatch.setattr(service.stages, "warm", lambda: None)  # no Ray: no pooled actors
    deadline = time.monotonic() + 10
    service.serve(until=lambda: good in started or time.monotonic() > deadline, poll_ms=100)
    assert started == [good]
    assert coord.get(good).state == "succeeded"
    assert coord.client.hget(coord.keys.job(bad), "state") == b"failed"


# -- result stores ---------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Path:
    spec = StoreSpec.for_source(48, 64, tasks=("pose", "seg", "depth"), frames_per_shard=2)
    path = tmp_path / "job.zarr"
    w = Writer.create(str(path), spec, job={"job_id": "job"})
    for i in range(4):
        w.add(synthetic_frame(spec, i, n_persons=1))
    w.finalize()
    return path


def test_store_attributes_holding_a_pickle_stay_inert_text(
    store: Path, live_payloads: dict[str, bytes]
) -> None:
    meta = json.loads((store / "zarr.json").read_text())
    text = live_payloads["open-p0"].decode("latin-1")
    meta["attributes"]["sapiens_stream"]["job"]["spec"] = text
    meta["attributes"]["injected"] = {"pickle": text}
    (store / "zarr.json").write_text(json.dumps(meta))
    reader = open_result(store)
    assert reader.attrs["job"]["spec"] == text  # a string, never loaded
    assert reader.summary().frames == 4
    reader.frame(3)


def test_store_metadata_replaced_by_a_pickle_is_refused(
    store: Path, live_payloads: dict[str, bytes]
) -> None:
    for name, payload in live_payloads.items():
        (store / "zarr.json").write_bytes(payload)
        with pytest.raises((StorageError, ValueError), match=r".") as e:
            open_result(store)
        assert "pickle" not in type(e.value).__module__, name


def test_store_metadata_replaced_by_a_pickle_is_a_storage_error(
    store: Path, live_payloads: dict[str, bytes]
) -> None:
    (store / "zarr.json").write_bytes(live_payloads["open-p5"])
    with pytest.raises(StorageError):
        open_result(store)


def test_store_chunks_replaced_by_pickles_are_never_unpickled(
    store: Path, live_payloads: dict[str, bytes]
) -> None:
    payload = live_payloads["system-p2"]
    chunks = [p for p in store.rglob("*") if p.is_file() and p.name != "zarr.json"]
    assert len(chunks) > 10
    for path in chunks:
        path.write_bytes(payload)
    reader = open_result(store)  # metadata is intact; every data object is a pickle now
    with pytest.raises(Exception) as e:
        reader.frame(0)
    assert "pickle" not in type(e.value).__name__.lower()


def _zarr_v2_pickle_store(root: str, fs: object, meta: dict, payload_obj: object) -> None:
    """A zarr v2 hierarchy with the sapiens-stream attributes whose arrays are object arrays
    using numcodecs' Pickle codec, with a chunk holding ``payload_obj``."""
    import numcodecs
    import numpy as np

    from storage.schema import ZarrLayout

    layout = ZarrLayout.from_spec(StoreSpec.from_dict(meta["layout"]))
    fs.pipe(f"{root}/.zgroup", json.dumps({"zarr_format": 2}).encode())
    fs.pipe(f"{root}/.zattrs", json.dumps({"sapiens_stream": meta}).encode())
    for a in layout.arrays:
        shape = [8, *a.row_shape]
        group = a.path.rsplit("/", 1)[0]
        fs.pipe(f"{root}/{group}/.zgroup", json.dumps({"zarr_format": 2}).encode())
        zarray = {
            "zarr_format": 2,
            "shape": shape,
            "chunks": shape,
            "dtype": "|O",
            "compressor": None,
            "fill_value": None,
            "order": "C",
            "filters": [{"id": "pickle", "protocol": 5}],
            "dimension_separator": ".",
        }
        fs.pipe(f"{root}/{a.path}/.zarray", json.dumps(zarray).encode())
        data = np.zeros(shape, dtype=object)
        data.flat[0] = payload_obj
        chunk = ".".join(["0"] * len(shape))
        fs.pipe(f"{root}/{a.path}/{chunk}", numcodecs.Pickle().encode(data))


def test_a_zarr_v2_store_using_the_pickle_codec_is_refused(store: Path, marker: Path) -> None:
    """zarr v2 can describe object arrays whose chunks are pickles (numcodecs ``Pickle``). A
    store crafted that way, at an fsspec URL (as s3:// would be), must not load them."""
    import fsspec
    from security_helpers import OpenForWriting

    meta = open_result(store).attrs
    fs = fsspec.filesystem("memory")
    root = "/sec-v2-pickle.zarr"
    try:
        _zarr_v2_pickle_store(root, fs, meta, OpenForWriting(marker))
        with pytest.raises(Exception) as e:
            reader = open_result(f"memory://{root}")
            reader.read_frames(0, 1)
        assert "pickle" in str(e.value).lower() or isinstance(e.value, StorageError)
    finally:
        fs.rm(root, recursive=True)
    # The same hierarchy on a local disk has no zarr.json: it is not a store at all.
    local = store.parent / "v2.zarr"
    shutil.rmtree(store)
    local_fs = fsspec.filesystem("file", auto_mkdir=True)
    _zarr_v2_pickle_store(str(local), local_fs, meta, OpenForWriting(marker))
    with pytest.raises(StorageError, match=r"zarr\.json"):
        open_result(local)


@pytest.mark.redis
def test_a_job_record_from_redis_reaches_ray_only_as_plain_data(
    client: redis.Redis, coord: Coordinator
) -> None:
    """What the service hands to JobSpec is exactly what msgpack decoded: plain types."""
    spec = {"source": "a.mp4", "sampling": {"stride": 2}, "tasks": ["pose"], "max_side": 64}
    job_id = coord.submit(spec).job_id
    rec = coord.get(job_id)

    def plain(value: object) -> bool:
        if isinstance(value, dict):
            return all(isinstance(k, str) and plain(v) for k, v in value.items())
        if isinstance(value, list):
            return all(plain(v) for v in value)
        return value is None or isinstance(value, (bool, int, float, str, bytes))

    assert rec.spec == spec and plain(rec.spec) and plain(rec.meta)
