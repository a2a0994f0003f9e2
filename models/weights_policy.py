"""Which checkpoint locations a long-running service may load from.

A job names its weights (``model.weights``: a file or directory, a ``file://`` URL, a hub name or
``hub``). A service that runs jobs from other people checks that name against a
:class:`WeightsPolicy` before loading anything: local paths must lie inside an allowed directory
after symlinks and ``..`` are resolved, hub names must belong to an allowed organisation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from models.errors import CheckpointError
from models.hub import hub_cache_dir

__all__ = ["WeightsPolicy"]

#: ``org/name`` as the hub spells repositories (what ``load_checkpoint`` tries when no such
#: local file exists).
_HUB_NAME = re.compile(r"^(?P<org>[A-Za-z0-9][A-Za-z0-9_.-]*)/[A-Za-z0-9][A-Za-z0-9_.-]*$")
#: ``weights: hub`` in a job spec means the official repositories (``facebook/sapiens-...``).
_DEFAULT_HUB_ORG = "facebook"


def _default_dirs() -> tuple[Path, ...]:
    return (hub_cache_dir(),)


@dataclass(frozen=True, slots=True, kw_only=True)
class WeightsPolicy:
    """Allow-list of weight locations.

    Args:
        allowed_dirs: directories whose files (at any depth) may be loaded; default: the hub
            cache that :func:`models.hub.download` uses.
        allowed_hub_orgs: hub organisations whose repositories may be named (compared
            case-insensitively, as the hub does); default: ``facebook``.

    Example:
        >>> policy = WeightsPolicy(allowed_dirs=(Path("/srv/weights"),))
        >>> policy.check("facebook/sapiens-pose-1b")
        >>> policy.check("/srv/weights/../etc/passwd")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        models.errors.CheckpointError: weights '/srv/weights/../etc/passwd' resolve to '/etc/passwd'
    """

    allowed_dirs: tuple[Path, ...] = field(default_factory=_default_dirs)
    allowed_hub_orgs: tuple[str, ...] = (_DEFAULT_HUB_ORG,)

    def __post_init__(self) -> None:
        object.__setattr__(self, "allowed_dirs", tuple(Path(d) for d in self.allowed_dirs))
        object.__setattr__(self, "allowed_hub_orgs", tuple(self.allowed_hub_orgs))

    def check(self, weights: str) -> None:
        """Raise unless ``weights`` names an allowed location; touches no network.

        ``hub`` stands for the official organisation; ``hf://org/name`` is a hub name;
        ``file://`` URLs and every other string are local paths, except ``org/name`` when no
        such local path exists (then it is a hub name, as :func:`models.load_checkpoint`
        reads it).

        Raises:
            CheckpointError: one line naming the location and the allow-list.
        """
        if not weights.strip():
            raise CheckpointError(f"weights location is empty; {self._allowed()}")
        scheme = weights.split("://", 1)[0].lower() if "://" in weights else ""
        hub_name = _HUB_NAME.match(weights.split("://", 1)[-1].split("@", 1)[0])
        if weights == "hub":
            self._check_org(weights, _DEFAULT_HUB_ORG)
        elif scheme == "hf" and hub_name is not None:
            self._check_org(weights, hub_name["org"])
        elif scheme == "file":
            self._check_path(weights, _file_url_path(weights))
        elif scheme:
            msg = f"weights {weights!r} name no local path or hub repository ({scheme}://); "
            raise CheckpointError(msg + self._allowed())
        elif hub_name is not None and not _exists(weights):
            self._check_org(weights, hub_name["org"])
        else:
            self._check_path(weights, weights)

    def _allowed(self) -> str:
        dirs = [str(d) for d in self.allowed_dirs]
        return f"allow-list: directories {dirs}, hub organisations {list(self.allowed_hub_orgs)}"

    def _check_org(self, weights: str, org: str) -> None:
        if org.casefold() not in {o.casefold() for o in self.allowed_hub_orgs}:
            msg = f"weights {weights!r} come from hub organisation {org!r}, not on the "
            raise CheckpointError(msg + self._allowed())

    def _check_path(self, weights: str, path: str) -> None:
        try:
            resolved = Path(path).resolve()
            roots = [d.resolve() for d in self.allowed_dirs]
        except (OSError, ValueError, RuntimeError) as e:  # NUL bytes, symlink loops
            raise CheckpointError(f"weights {weights!r} cannot be resolved ({e})") from e
        if not any(resolved.is_relative_to(root) for root in roots):
            msg = f"weights {weights!r} resolve to {str(resolved)!r}, outside the "
            raise CheckpointError(msg + self._allowed())


def _file_url_path(url: str) -> str:
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
        raise CheckpointError(f"weights {url!r}: only file:///absolute/path URLs are local paths")
    return unquote(parts.path)


def _exists(path: str) -> bool:
    try:
        return Path(path).exists()
    except (OSError, ValueError):
        return False
