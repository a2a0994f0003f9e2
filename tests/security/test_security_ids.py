"""Job ids cannot escape the output root or the Redis key namespace.

Hostile ids (traversal, separators, absolute paths, NUL, control characters, very long ids,
look-alike Unicode) are refused by ``JobSpec``, by the ``Coordinator`` (submit and every
lookup) and by the CLI (exit code 2); every id that is accepted names ``<root>/<id>.zarr``
directly inside the output root.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from flows.cli import main as cli
from flows.errors import SpecError
from flows.plan import plan_job
from flows.spec import JobSpec
from storage import Coordinator, InvalidJobIdError
from storage._keys import Keys, validate_id

ROOT = Path(__file__).resolve().parents[2]

HOSTILE_IDS = [
    "../x",
    "..",
    ".",
    "./a",
    "a/b",
    "a/../b",
    "../../../../etc/passwd",
    "/etc/passwd",
    "/abs",
    "a\\b",
    "..\\x",
    "C:\\x",
    "C:x",
    "a\x00b",
    "\x00",
    "a\x00/../x",
    "",
    " ",
    "a b",
    "\nabc",
    "a\tb",
    "a\rb",
    "x" * 129,
    "x" * 1000,
    "x" * 100_000,
    "a:b",
    "a*",
    "a?",
    "{a}",
    "a[0]",
    "%2e%2e",
    "a%2fb",
    "~",
    "~root",
    "$HOME",
    "a;rm",
    "`id`",
    "s3://bucket/x",
    "file:///etc/x",
    "\uff41\uff42\uff43",  # fullwidth letters
    "\uff0e\uff0e",  # fullwidth full stops
    "a\uff0fb",  # fullwidth solidus
    "a\u2215b",  # division slash
    "a\u2044b",  # fraction slash
    "\u2024\u2024",  # one dot leaders
    "\u202eabc",  # right-to-left override
    "a\u200bb",  # zero-width space
    "e\u0301",  # combining accent
    "\u00e9",
    "\u0661\u0662\u0663",  # Arabic-Indic digits
    "A\u212a",  # Kelvin sign
    "\U0001f600",
    pytest.param("abc\n", id="trailing-newline"),
    pytest.param("a\n", id="short-trailing-newline"),
]
# The Coordinator and the CLI refuse every one, the newline ones included.
PLAIN_HOSTILE_IDS = [i for i in HOSTILE_IDS if isinstance(i, str)] + ["abc\n", "a\n"]


def _ids(values: list[object]) -> list[str]:
    return [ascii(v)[:40] if isinstance(v, str) else v.id for v in values]  # type: ignore[attr-defined]


@pytest.mark.parametrize("job_id", HOSTILE_IDS, ids=_ids(HOSTILE_IDS))
def test_jobspec_refuses_hostile_ids(job_id: str, tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="job_id"):
        JobSpec(source="a.mp4", job_id=job_id, output_root=str(tmp_path))
    with pytest.raises(SpecError):
        JobSpec.from_dict({"source": "a.mp4", "job_id": job_id})


@pytest.mark.parametrize("job_id", PLAIN_HOSTILE_IDS, ids=_ids(PLAIN_HOSTILE_IDS))
def test_key_builder_refuses_hostile_ids(job_id: str) -> None:
    keys = Keys("sapiens-stream")
    for build in (keys.job, keys.events):
        with pytest.raises(InvalidJobIdError):
            build(job_id)
    with pytest.raises(InvalidJobIdError):
        validate_id(job_id)


@pytest.mark.redis
def test_coordinator_refuses_hostile_ids_everywhere(coord: Coordinator) -> None:
    for job_id in PLAIN_HOSTILE_IDS:
        for call in (
            lambda j=job_id: coord.submit({"source": "a.mp4"}, job_id=j),
            lambda j=job_id: coord.get(j),
            lambda j=job_id: coord.cancel(j),
            lambda j=job_id: coord.events(j),
        ):
            with pytest.raises(InvalidJobIdError):
                call()
    assert list(coord.client.scan_iter(match=f"{coord.config.prefix}:*")) == []


@pytest.mark.redis
def test_a_queue_entry_with_a_hostile_id_is_dropped_by_claim(coord: Coordinator) -> None:
    coord.submit({"source": "a.mp4"}, job_id="ok-1")
    assert coord.claim("w").job_id == "ok-1"
    for job_id in ("../x", "a/b", "/etc/passwd", "x" * 1000, "a\x00b", "\u202eabc"):
        coord.client.xadd(coord.keys.queue, {"job": job_id.encode()})
    coord.submit({"source": "a.mp4"}, job_id="ok-2")
    assert coord.claim("w").job_id == "ok-2"
    assert coord.claim("w") is None


def _run_cli(argv: list[str]) -> int:
    try:
        return cli(argv)
    except SystemExit as e:  # argparse refuses some spellings (a leading '-') by itself
        return int(e.code or 0)


@pytest.mark.redis
@pytest.mark.parametrize("job_id", PLAIN_HOSTILE_IDS, ids=_ids(PLAIN_HOSTILE_IDS))
def test_cli_refuses_hostile_ids_with_exit_code_2(
    job_id: str, server_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    video = tmp_path / "a.mp4"
    video.write_bytes(b"")
    common = ["--output-root", str(tmp_path / "out"), "--redis-url", server_url]
    spec_json = json.dumps({"job_id": job_id})
    runs = {
        "submit": ["submit", str(video), "--job-id", job_id, *common],
        "run": ["run", str(video), "--job-id", job_id, "--quiet", *common],
        "submit --spec-json": ["submit", str(video), "--spec-json", spec_json, *common],
        "status": ["status", job_id, *common],
        "wait": ["wait", job_id, "--timeout", "1", *common],
        "cancel": ["cancel", job_id, *common],
    }
    for name, argv in runs.items():
        assert _run_cli(argv) == 2, name
        err = capsys.readouterr().err
        assert "Traceback" not in err, (name, err)
        assert err.startswith(("error:", "usage:")), (name, err)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").glob("*.zarr"))


@pytest.mark.redis
def test_the_installed_command_exits_2_on_a_traversal_id(server_url: str, tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("sapiens-stream")
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL",)}
    env["SAPIENS_STREAM_REDIS_URL"] = server_url
    for argv in (
        ["status", "../../etc/passwd"],
        ["submit", str(tmp_path / "a.mp4"), "--job-id", "../x"],
    ):
        out = subprocess.run(
            [str(exe), *argv, "--output-root", str(tmp_path / "out")],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 2, (argv, out.stderr)
        assert out.stderr.startswith("error:") and "Traceback" not in out.stderr


def test_jobspec_and_the_registry_accept_the_same_ids() -> None:
    for job_id in ("my.job", "a..b", "x" * 64, "x" * 65, "x" * 128):
        try:
            JobSpec(source="a.mp4", job_id=job_id)
            spec_ok = True
        except SpecError:
            spec_ok = False
        try:
            validate_id(job_id)
            registry_ok = True
        except InvalidJobIdError:
            registry_ok = False
        assert spec_ok == registry_ok, job_id


def _fuzzed_ids(n: int) -> list[str]:
    rng = random.Random(1234)
    alphabet = "aZ09._-/\\:\x00 \n\t~%\uff0e\uff0f\u2215\u202e\u00e9*{}"
    out = []
    for _ in range(n):
        length = rng.choice([1, 2, 3, 5, 8, 64, 65, 128, 129, 300])
        out.append("".join(rng.choice(alphabet) for _ in range(length)))
    return out


@pytest.mark.parametrize("root", ["out", "out/", "out//", "./out", "a/../out", "ABS"])
def test_every_accepted_id_names_a_store_directly_inside_the_output_root(
    root: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    root = str(tmp_path / "abs-out") if root == "ABS" else root
    base = Path(root).resolve()
    accepted = 0
    for job_id in [*_fuzzed_ids(3000), "a", "A-1_b.c", "x" * 64, "0..0", "a."]:
        try:
            spec = JobSpec(source="a.mp4", job_id=job_id, output_root=root)
        except SpecError:
            continue
        store = Path(plan_job(spec).store_url)
        resolved = store.resolve()
        assert resolved.parent == base, (job_id, store)
        assert resolved.name == f"{job_id}.zarr", job_id  # (a trailing newline: see above)
        accepted += 1
    assert accepted >= 5


@pytest.mark.redis
def test_the_service_names_the_store_by_the_registry_id_not_the_spec(
    coord: Coordinator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A spec carrying a hostile job_id is stored as submitted, but the service builds the
    job from the registry's (validated) id."""
    import flows.service
    from flows.pool import ScalePolicy
    from flows.service import JobService

    spec = {"source": "a.mp4", "job_id": "../../escaped", "output_root": str(tmp_path / "out")}
    coord.submit(spec, job_id="registry-id")
    lease = coord.claim("sec-w")
    plans = []

    class _Stop(Exception):
        pass

    def fake_run_on_ray(plan, **kwargs):
        plans.append(plan)
        raise _Stop

    monkeypatch.setattr(flows.service, "run_on_ray", fake_run_on_ray)
    service = JobService(coord, worker_id="sec-w", policy=ScalePolicy(actor_gpus=0))
    with pytest.raises(_Stop):
        service._run_job(lease)
    assert Path(plans[0].store_url) == tmp_path / "out" / "registry-id.zarr"
