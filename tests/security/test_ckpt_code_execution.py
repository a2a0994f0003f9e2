"""No code from a checkpoint file ever runs, whatever the file's name or format.

TorchScript archives carry code (``torch.jit.load`` runs a module's ``__setstate__``), and
``torch.export`` archives can hold pickles that ``torch.export.load`` unpickles without
restriction. Each payload here is first shown to be live: loaded by torch's own loader (on a copy
aimed at another file), it creates that file. Read through ``read_state_dict`` or
``load_checkpoint``, the same file must give its weights or a ``CheckpointError``, and its file
must never appear.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from security_helpers import OpenForWriting

from models import CheckpointError, load_checkpoint
from models._formats import read_state_dict

# A payload proven live under torch's own loader is ``open(path, "w")``: the file object it makes
# is dropped unclosed, which Python reports as a ResourceWarning (raised where it is collected).
pytestmark = [
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]


class WritesOnLoad(torch.nn.Module):
    """A scripted module whose ``__setstate__`` creates the file at ``path`` when loaded
    (``torch.from_file`` with ``shared=True`` creates a missing file)."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.arange(3.0))
        self.path = path
        self.probe = torch.zeros(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight

    @torch.jit.export
    def __getstate__(self) -> tuple[torch.Tensor, str, bool]:
        return (self.weight, self.path, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[torch.Tensor, str, bool]) -> None:
        self.weight = state[0]
        self.path = state[1]
        self.training = state[2]
        self.probe = torch.from_file(self.path, shared=True, size=4)


class WritesOnLoadChild(torch.nn.Module):
    """The same, one level down, under an ordinary module (the weights still load)."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.head = torch.nn.Linear(3, 2)
        self.hook = WritesOnLoad(path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.hook(x))


def _expect_no_run(load: Callable[[], object], marker: Path) -> None:
    with contextlib.suppress(CheckpointError):
        load()
    assert not marker.exists(), f"the checkpoint ran code: {marker} exists"


def _live(
    write: Callable[[Path, Path], None], torch_load: Callable[[str], object], tmp: Path
) -> None:
    """Prove the payload runs under torch's own loader, on a copy aimed at ``probe``."""
    probe, path = tmp / "probe-ran", tmp / "probe.pt2"
    write(path, probe)
    with contextlib.suppress(Exception):  # torch's loader may fail after the payload ran
        torch_load(str(path))
    assert probe.exists(), "the payload is not live; the test would prove nothing"
    probe.unlink()


def _write_script(module: type[torch.nn.Module]) -> Callable[[Path, Path], None]:
    return lambda path, target: torch.jit.script(module(str(target))).save(str(path))


@pytest.mark.parametrize("module", [WritesOnLoad, WritesOnLoadChild])
@pytest.mark.parametrize("name", ["evil.pth", "evil.pt2", "sapiens_0.3b_pose_torchscript.pt2"])
def test_a_torchscript_setstate_never_runs(
    tmp_path: Path, marker: Path, module: type[torch.nn.Module], name: str
) -> None:
    _live(_write_script(module), torch.jit.load, tmp_path)
    path = tmp_path / name
    _write_script(module)(path, marker)
    _expect_no_run(lambda: read_state_dict(path), marker)
    _expect_no_run(lambda: load_checkpoint(path, task="pose"), marker)


def test_the_weights_around_a_custom_setstate_are_refused_not_guessed(
    tmp_path: Path, marker: Path
) -> None:
    path = tmp_path / "evil.pt2"
    _write_script(WritesOnLoadChild)(path, marker)
    with pytest.raises(CheckpointError, match=r"hook.*own __getstate__.*never does"):
        read_state_dict(path)


def _small_export(path: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    torch.export.save(torch.export.export(model.eval(), (torch.randn(2, 3),)), str(path))


def _rewrite(path: Path, edit: Callable[[str, bytes], bytes]) -> None:
    """Rewrite every record of the zip at ``path`` through ``edit(name, data)``."""
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, edit(info.filename, src.read(info)))
    shutil.move(tmp, path)


def _export_with_pickled_weight(path: Path, target: Path) -> None:
    """A current-layout ``.pt2`` whose first weight is declared ``use_pickle`` and holds a pickle
    that opens ``target`` for writing."""
    _small_export(path)
    payload = path.with_suffix(".payload")
    torch.save(OpenForWriting(target), payload)
    first: dict[str, str] = {}

    def edit(name: str, data: bytes) -> bytes:
        if name.endswith("_weights_config.json"):
            config = json.loads(data)
            entry = next(iter(config["config"].values()))
            entry["use_pickle"] = True
            first["record"] = entry["path_name"]
            return json.dumps(config).encode()
        return data

    _rewrite(path, edit)
    _rewrite(path, lambda n, d: payload.read_bytes() if n.endswith("/" + first["record"]) else d)


def test_an_export_archive_with_a_pickled_weight_runs_nothing(tmp_path: Path, marker: Path) -> None:
    _live(_export_with_pickled_weight, torch.export.load, tmp_path)
    path = tmp_path / "sapiens_0.3b_seg_bfloat16.pt2"
    _export_with_pickled_weight(path, marker)
    _expect_no_run(lambda: read_state_dict(path), marker)
    with pytest.raises(CheckpointError, match=r"io\.open.*not on the allow-list"):
        read_state_dict(path)


def _export_v23_with_code(path: Path, target: Path) -> None:
    """The PyTorch 2.3 layout (the released ``_bfloat16.pt2`` files) with a state dict pickle
    that also opens ``target``; torch.export.load falls back to ``weights_only=False`` for it."""
    from torch._export.serde.schema import SCHEMA_VERSION
    from torch._export.serde.serialize import serialize

    model = torch.nn.Linear(3, 2).eval()
    artifact = serialize(torch.export.export(model, (torch.randn(2, 3),)))
    payload = path.with_suffix(".payload")
    torch.save({**model.state_dict(), "evil": OpenForWriting(target)}, payload)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("serialized_exported_program.json", artifact.exported_program)
        zf.writestr("serialized_state_dict.pt", payload.read_bytes())
        zf.writestr("serialized_constants.pt", artifact.constants)
        zf.writestr("serialized_example_inputs.pt", artifact.example_inputs)
        zf.writestr("version", ".".join(map(str, SCHEMA_VERSION)))


def test_a_pytorch_2_3_export_archive_with_code_in_its_state_dict_runs_nothing(
    tmp_path: Path, marker: Path
) -> None:
    _live(_export_v23_with_code, torch.export.load, tmp_path)
    path = tmp_path / "sapiens_0.3b_depth_bfloat16.pt2"
    _export_v23_with_code(path, marker)
    _expect_no_run(lambda: read_state_dict(path), marker)
    _expect_no_run(lambda: load_checkpoint(path, task="depth"), marker)
