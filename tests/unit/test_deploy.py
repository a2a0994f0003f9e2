"""Deployment artifacts agree with Ray, KubeRay, the README and the CLI (no cluster, no network).

Checked: ray_cluster.yaml with Ray's own schema and config preparation; the KubeRay manifests
structurally; the install commands of README.md, deploy/Dockerfile and ray_cluster.yaml against
each other; every ``sapiens-stream`` command line in docs/deploy.md and the manifests against
the real argument parser.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_YAML = ROOT / "ray_cluster.yaml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
KUBERAY = ROOT / "deploy" / "kuberay"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"

# A Redis URL with a password in it: scheme, optional user, ':', password, '@'.
_REDIS_WITH_PASSWORD = re.compile(r"rediss?://[^:@/\s]*:([^@/\s]+)@")
_PLACEHOLDER_PASSWORD = re.compile(r"^(REPLACE-WITH-[A-Z-]+|PASSWORD|[A-Z-]*PASSWORD|\$\w+)$")


# -- helpers -----------------------------------------------------------------------------------


def _load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _strings(node: Any) -> Iterator[str]:
    """Every string value in a parsed YAML document."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


def _ray_pin() -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in deps:
        match = re.fullmatch(r"ray(\[[^\]]*\])?==([\w.]+)", dep.replace(" ", ""))
        if match:
            return match.group(2)
    raise AssertionError(f"pyproject.toml pins no exact ray version: {deps}")


def _packages() -> list[str]:
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return [name.rstrip("*") for name in find["packages"]["find"]["include"]]


_WRAPPERS = {"nohup", "exec", "env", "time", "setsid"}
_ASSIGNMENT = re.compile(r"^[A-Za-z_]\w*=")


def _words(command: str) -> list[str]:
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    return list(lexer)


def _cli_calls(command: str) -> Iterator[list[str]]:
    """argv (after ``sapiens-stream``) of every ``sapiens-stream`` call in a shell command,
    including the calls inside a quoted command (``bash -c "..."``, ``ray exec X.yaml '...'``)."""
    words = _words(command)
    start = True  # at the start of a simple command
    for i, word in enumerate(words):
        if word and set(word) <= set("&|;<>()"):
            start = True
            continue
        if start and word == "sapiens-stream":
            argv = []
            for arg in words[i + 1 :]:
                if arg and set(arg) <= set("&|;<>()"):
                    break
                argv.append(arg)
            yield argv
            start = False
            continue
        # A quoted command run by another one: `bash -c "..."`, `ray exec CLUSTER.yaml '...'`
        # (a quoted pattern such as `grep 'sapiens-stream serve'` is not a call).
        previous = words[i - 1] if i else ""
        if "sapiens-stream " in word and (previous == "-c" or previous.endswith(".yaml")):
            yield from _cli_calls(word)
        if not (start and (word in _WRAPPERS or _ASSIGNMENT.match(word))):
            start = False


def _shell_blocks(markdown: str) -> Iterator[str]:
    """Commands of the ```bash blocks, continuation lines joined."""
    for block in re.findall(r"```(?:bash|sh)\n(.*?)```", markdown, flags=re.DOTALL):
        yield from block.replace("\\\n", " ").splitlines()


def _inline_spans(markdown: str) -> Iterator[str]:
    """Inline code spans of the prose that mention a ``sapiens-stream`` command."""
    prose = re.sub(r"```.*?```", "", markdown, flags=re.DOTALL)
    yield from (span for span in re.findall(r"`([^`\n]+)`", prose) if "sapiens-stream " in span)


def _subparser(argv: list[str]) -> Any:
    from flows.cli import _parser

    parser = _parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    assert argv and argv[0] in sub.choices, f"no such command: sapiens-stream {shlex.join(argv)}"
    return sub.choices[argv[0]]


def _parse(argv: list[str]) -> Any:
    from flows.cli import _parser

    parser = _parser()
    try:
        return parser.parse_args(argv)
    except SystemExit as e:
        if e.code == 0:  # --help
            return None
        pytest.fail(f"the CLI rejects: sapiens-stream {shlex.join(argv)}")


def _readme_install() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Install", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.DOTALL)
    assert block, "README.md's Install section has no ```bash block"
    lines = [line.split(" #", 1)[0].strip() for line in block.group(1).splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def _dockerfile_runs() -> list[str]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    runs = [line[4:] for line in text.splitlines() if line.startswith("RUN ")]
    return [part.strip() for run in runs for part in run.split("&&")]


def _pip_commands(commands: list[str]) -> list[str]:
    parts = [part.strip() for command in commands for part in command.split("&&")]
    return [part for part in parts if " pip " in f" {part} "]


# -- ray_cluster.yaml ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> dict[str, Any]:
    return _load_yaml(CLUSTER_YAML)


def test_cluster_config_passes_ray_schema(cluster: dict[str, Any]) -> None:
    import jsonschema
    import ray.autoscaler

    schema_path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    jsonschema.validate(cluster, json.loads(schema_path.read_text()))


def test_cluster_config_survives_ray_prepare_and_validate(cluster: dict[str, Any]) -> None:
    """What `ray up` does before it talks to the cloud: fill defaults, merge, validate."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(cluster))
    validate_config(prepared)
    types = prepared["available_node_types"]
    assert types[prepared["head_node_type"]]["max_workers"] == 0
    assert types["gpu"]["max_workers"] == cluster["available_node_types"]["gpu"]["max_workers"]
    # setup_commands reach both head and workers; the head adds its own after them.
    setup = cluster["setup_commands"]
    assert prepared["head_setup_commands"][: len(setup)] == setup
    assert prepared["worker_setup_commands"][: len(setup)] == setup
    assert prepared["provider"]["type"] == "aws"


def test_cluster_has_gpu_workers_scaling_from_zero(cluster: dict[str, Any]) -> None:
    types = cluster["available_node_types"]
    gpu = [t for t in types.values() if t.get("resources", {}).get("GPU", 0) >= 1]
    assert gpu, "no node type advertises a GPU"
    for node_type in gpu:
        assert node_type["min_workers"] == 0
        assert node_type["max_workers"] >= 1
    assert cluster["max_workers"] >= max(t["max_workers"] for t in gpu)
    head = types[cluster["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    assert head["resources"].get("CPU") == 0, "Ray work must stay off the head"
    assert cluster["idle_timeout_minutes"] > 0


def test_cluster_head_starts_ray_then_serve(cluster: dict[str, Any]) -> None:
    commands = cluster["head_start_ray_commands"]
    ray_start = next(i for i, c in enumerate(commands) if "ray start --head" in c)
    serve = [
        (i, argv) for i, c in enumerate(commands) for argv in _cli_calls(c) if argv[:1] == ["serve"]
    ]
    assert len(serve) == 1, f"expected one `sapiens-stream serve` on the head, got {serve}"
    index, argv = serve[0]
    assert index > ray_start
    words = _words(commands[index])
    at = words.index("sapiens-stream")
    assert words[at - 1] == "nohup" and "&" in words[at:], "serve must run in the background"
    assert argv[argv.index("--address") + 1] == "auto"
    assert float(argv[argv.index("--actor-gpus") + 1]) >= 1, "the CPU head must ask for GPUs"
    assert "--redis-url" not in argv, "the Redis URL comes from SAPIENS_STREAM_REDIS_URL"
    assert "SAPIENS_STREAM_REDIS_URL" in commands[index]
    for flag in ("--output-root", "--max-jobs", "--min-actors", "--max-actors", "--actor-idle-s"):
        assert flag in argv


def test_cluster_config_holds_no_redis_url_or_secret(cluster: dict[str, Any]) -> None:
    for value in _strings(cluster):
        assert "redis://" not in value and "rediss://" not in value, value
        assert "RAY_AUTH_TOKEN=" not in value, value
    # Secrets arrive through the mounted directory, loaded before Ray starts on every node.
    assert "~/.config/sapiens-stream" in cluster["file_mounts"]
    for command in (cluster["head_start_ray_commands"], cluster["worker_start_ray_commands"]):
        start = next(c for c in command if "ray start" in c)
        assert "cluster.env" in start.split("ray start")[0]


def test_cluster_image_matches_pinned_ray(cluster: dict[str, Any]) -> None:
    assert cluster["docker"]["image"].startswith(f"rayproject/ray:{_ray_pin()}-py311")


# -- install commands: README, Dockerfile, ray_cluster.yaml ------------------------------------


def test_dockerfile_installs_exactly_as_the_readme_documents() -> None:
    readme = _readme_install()
    assert readme, "README.md's Install section lists no command"
    assert _pip_commands(_dockerfile_runs()) == readme


def test_cluster_setup_installs_exactly_as_the_readme_documents(cluster: dict[str, Any]) -> None:
    assert _pip_commands(cluster["setup_commands"]) == _readme_install()


def test_dockerfile_base_and_sources() -> None:
    text = DOCKERFILE.read_text()
    base = re.search(r"^FROM\s+(\S+)", text, flags=re.MULTILINE)
    assert base and base.group(1) == f"rayproject/ray:{_ray_pin()}-py311-gpu"
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == ">=3.11"
    copied = " ".join(line for line in text.splitlines() if line.startswith("COPY "))
    ignore = (ROOT / "deploy" / "Dockerfile.dockerignore").read_text().split()
    for name in [*_packages(), "pyproject.toml", "README.md"]:
        assert name in copied, f"deploy/Dockerfile does not copy {name}"
        assert f"!{name}" in ignore or f"!{name}/" in ignore, f"dockerignore drops {name}"


# -- KubeRay manifests ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def raycluster() -> dict[str, Any]:
    (doc,) = _load_all(KUBERAY / "raycluster.yaml")
    return doc


def _containers(template: dict[str, Any]) -> list[dict[str, Any]]:
    return template["spec"]["containers"]


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def test_raycluster_autoscales_gpu_workers_from_zero(raycluster: dict[str, Any]) -> None:
    assert raycluster["apiVersion"] == "ray.io/v1"
    assert raycluster["kind"] == "RayCluster"
    spec = raycluster["spec"]
    assert spec["rayVersion"] == _ray_pin()
    assert spec["enableInTreeAutoscaling"] is True
    assert int(spec["autoscalerOptions"]["idleTimeoutSeconds"]) > 0
    assert str(spec["headGroupSpec"]["rayStartParams"]["num-cpus"]) == "0"
    gpu_groups = []
    for group in spec["workerGroupSpecs"]:
        limits = [c.get("resources", {}).get("limits", {}) for c in _containers(group["template"])]
        if any(int(lim.get("nvidia.com/gpu", 0)) >= 1 for lim in limits):
            gpu_groups.append(group)
    assert gpu_groups, "no worker group requests nvidia.com/gpu"
    for group in gpu_groups:
        assert group["minReplicas"] == 0
        assert group["maxReplicas"] >= 1
        assert group.get("replicas", 0) == 0


def test_raycluster_uses_token_auth_and_secret_redis_url(raycluster: dict[str, Any]) -> None:
    spec = raycluster["spec"]
    auth = spec.get("authOptions", {})
    head = _containers(spec["headGroupSpec"]["template"])
    assert auth.get("mode") == "token" or all(
        _env(c).get("RAY_AUTH_MODE", {}).get("value") == "token" for c in head
    )
    for container in head:
        redis_url = _env(container).get("SAPIENS_STREAM_REDIS_URL")
        if redis_url is not None:
            assert "value" not in redis_url, "the Redis URL must come from a Secret"
            assert redis_url["valueFrom"]["secretKeyRef"]["name"]
    for value in _strings(raycluster):
        assert "redis://" not in value and "rediss://" not in value, value


def test_raycluster_head_runs_serve_sidecar(raycluster: dict[str, Any]) -> None:
    template = raycluster["spec"]["headGroupSpec"]["template"]
    containers = _containers(template)
    assert containers[0]["name"] == "ray-head", "KubeRay treats the first container as Ray's"
    serves = [
        (c, argv)
        for c in containers
        for argv in _cli_calls(" ".join([*c.get("command", []), *c.get("args", [])]))
        if argv[:1] == ["serve"]
    ]
    assert len(serves) == 1, "expected one container running `sapiens-stream serve`"
    container, argv = serves[0]
    assert container is not containers[0]
    assert argv[argv.index("--address") + 1] == "auto"
    assert float(argv[argv.index("--actor-gpus") + 1]) >= 1
    env = _env(container)
    assert env["RAY_AUTH_MODE"]["value"] == "token"
    token = env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert token["name"] == raycluster["spec"]["authOptions"]["secretName"]
    assert "secretKeyRef" in env["SAPIENS_STREAM_REDIS_URL"]["valueFrom"]
    # The sidecar reaches the head's Ray node through the shared /tmp/ray volume.
    mounts = {
        c["name"]: {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
        for c in containers
    }
    assert mounts[container["name"]]["/tmp/ray"] == mounts["ray-head"]["/tmp/ray"]


def test_rayjob_targets_the_cluster() -> None:
    (job,) = _load_all(KUBERAY / "rayjob.yaml")
    assert job["apiVersion"] == "ray.io/v1"
    assert job["kind"] == "RayJob"
    spec = job["spec"]
    assert spec.get("clusterSelector") or spec.get("rayClusterSpec")
    if "clusterSelector" in spec:
        (cluster_doc,) = _load_all(KUBERAY / "raycluster.yaml")
        assert spec["clusterSelector"]["ray.io/cluster"] == cluster_doc["metadata"]["name"]
        assert not spec.get("shutdownAfterJobFinishes", False)
    calls = list(_cli_calls(spec["entrypoint"]))
    assert calls and calls[0][0] in ("run", "submit")
    # Operators (&&) must be inside one quoted word: KubeRay pastes the entrypoint into a shell.
    top = _words(spec["entrypoint"])
    assert not any(w in ("&&", "||", ";", "|") for w in top), top


def test_redis_manifest_requires_a_secret_password_and_persists() -> None:
    docs = {doc["kind"]: doc for doc in _load_all(KUBERAY / "redis.yaml")}
    assert {"Secret", "Deployment", "Service", "PersistentVolumeClaim"} <= set(docs)
    secret, deployment = docs["Secret"], docs["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    password = _env(container)["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert password["name"] == secret["metadata"]["name"]
    assert password["key"] in secret["stringData"]
    script = " ".join([*container.get("command", []), *container.get("args", [])])
    assert "requirepass" in script and "$REDIS_PASSWORD" in script
    assert "--appendonly yes" in script
    assert "noeviction" in script
    data = next(m for m in container["volumeMounts"] if m["mountPath"] == "/data")
    volume = next(v for v in pod["volumes"] if v["name"] == data["name"])
    claim = docs["PersistentVolumeClaim"]["metadata"]["name"]
    assert volume["persistentVolumeClaim"]["claimName"] == claim
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert docs["Service"]["spec"]["selector"].items() <= labels.items()
    # The Secret the RayCluster reads its Redis URL from is this one, with a `url` key.
    (cluster_doc,) = _load_all(KUBERAY / "raycluster.yaml")
    head = _containers(cluster_doc["spec"]["headGroupSpec"]["template"])
    refs = {
        (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        for c in head
        for e in c.get("env", [])
        if e["name"] == "SAPIENS_STREAM_REDIS_URL"
    }
    assert refs == {(secret["metadata"]["name"], "url")}
    assert "url" in secret["stringData"]


@pytest.mark.parametrize("name", ["raycluster.yaml", "rayjob.yaml", "redis.yaml"])
def test_manifests_hold_placeholders_not_passwords(name: str) -> None:
    for doc in _load_all(KUBERAY / name):
        for value in _strings(doc):
            for password in _REDIS_WITH_PASSWORD.findall(value):
                assert _PLACEHOLDER_PASSWORD.match(password), f"{name}: {value}"


# -- every documented command line parses ----------------------------------------------------


def _documented_calls() -> list[tuple[str, list[str]]]:
    calls: list[tuple[str, list[str]]] = []
    for line in _shell_blocks(DEPLOY_DOC.read_text()):
        calls += [("docs/deploy.md", argv) for argv in _cli_calls(line)]
    for command in _load_yaml(CLUSTER_YAML)["head_start_ray_commands"]:
        calls += [("ray_cluster.yaml", argv) for argv in _cli_calls(command)]
    for name in ("raycluster.yaml", "rayjob.yaml"):
        for doc in _load_all(KUBERAY / name):
            for value in _strings(doc):
                if "sapiens-stream " in value:  # not a bare name such as a label value
                    calls += [(name, argv) for argv in _cli_calls(value)]
    return calls


def test_documented_commands_are_found() -> None:
    found = {argv[0] for _, argv in _documented_calls() if argv}
    assert {"serve", "submit", "status", "wait", "cancel", "list", "query", "render"} <= found


@pytest.mark.parametrize(
    ("where", "argv"),
    _documented_calls(),
    ids=lambda v: v if isinstance(v, str) else " ".join(v)[:60],
)
def test_documented_command_parses(where: str, argv: list[str]) -> None:
    _parse(argv)


@pytest.mark.parametrize("span", list(_inline_spans(DEPLOY_DOC.read_text())))
def test_commands_named_in_prose_exist(span: str) -> None:
    """Prose names commands and flags without their arguments: those must exist."""
    for argv in _cli_calls(span):
        known = {o for action in _subparser(argv)._actions for o in action.option_strings}
        flags = {a.split("=", 1)[0] for a in argv[1:] if a.startswith("--")}
        assert flags <= known, f"{span!r}: unknown {sorted(flags - known)}"
