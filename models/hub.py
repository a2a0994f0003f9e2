"""Where the released Sapiens checkpoints live on the Hugging Face hub, and how to fetch them.

Repository and file names are those of the official collections:
``facebook/sapiens-<task>-<size>`` with ``-torchscript`` / ``-bfloat16`` variants, and
``facebook/sapiens2-<task>-<size>`` holding one ``sapiens2_<size>_<task>.safetensors`` each.
Downloads go through ``huggingface_hub``, so its cache, ``HF_HOME``, ``HF_HUB_OFFLINE`` and
tokens all apply; offline, a cached copy is used.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from models.errors import CheckpointNotFoundError

__all__ = [
    "FORMATS",
    "HUB_POSE_KEYPOINTS",
    "HubRef",
    "download",
    "hub_cache_dir",
    "hub_ref",
    "parse_hub_name",
    "released_pose_files",
]

logger = logging.getLogger(__name__)

#: Format suffix of the repository name -> file-name suffix.
FORMATS: dict[str, str] = {
    "original": ".pth",
    "torchscript": "_torchscript.pt2",
    "bfloat16": "_bfloat16.pt2",
}

# File stems per (task, size), from the official model zoo (SPEC §8).
_STEMS: dict[tuple[str, str], tuple[str, ...]] = {
    ("pose", "0.3b"): ("sapiens_0.3b_goliath_best_goliath_AP_573",),
    ("pose", "0.6b"): ("sapiens_0.6b_goliath_best_goliath_AP_609",),
    ("pose", "1b"): (
        "sapiens_1b_goliath_best_goliath_AP_639",
        "sapiens_1b_goliath_best_goliath_AP_640",
    ),
    ("seg", "0.3b"): ("sapiens_0.3b_goliath_best_goliath_mIoU_7673_epoch_194",),
    ("seg", "0.6b"): ("sapiens_0.6b_goliath_best_goliath_mIoU_7777_epoch_178",),
    ("seg", "1b"): ("sapiens_1b_goliath_best_goliath_mIoU_7994_epoch_151",),
    ("depth", "0.3b"): ("sapiens_0.3b_render_people_epoch_100",),
    ("depth", "0.6b"): ("sapiens_0.6b_render_people_epoch_70",),
    ("depth", "1b"): ("sapiens_1b_render_people_epoch_88",),
    ("depth", "2b"): ("sapiens_2b_render_people_epoch_25",),
    ("normal", "0.3b"): ("sapiens_0.3b_normal_render_people_epoch_66",),
    ("normal", "0.6b"): ("sapiens_0.6b_normal_render_people_epoch_200",),
    ("normal", "1b"): ("sapiens_1b_normal_render_people_epoch_115",),
    ("normal", "2b"): ("sapiens_2b_normal_render_people_epoch_70",),
    ("pretrain", "0.3b"): ("sapiens_0.3b_epoch_1600_clean", "sapiens_0.3b_epoch_1600"),
    ("pretrain", "0.6b"): ("sapiens_0.6b_epoch_1600_clean", "sapiens_0.6b_epoch_1600"),
    ("pretrain", "1b"): ("sapiens_1b_epoch_173_clean", "sapiens_1b_epoch_173"),
    ("pretrain", "2b"): ("sapiens_2b_epoch_660_clean", "sapiens_2b_epoch_660"),
}

#: The keypoint set of every pose checkpoint in facebook's hub repositories (Goliath-308).
HUB_POSE_KEYPOINTS = 308

# File stems of the released 133-keypoint (COCO-WholeBody) and 17-keypoint (COCO) pose
# checkpoints (SPEC §8; the lite files add the usual suffixes). No facebook repository holds
# them: SPEC §8 names their host, noahcao/sapiens-pose-coco, but not their paths in it, so
# they are read from a weights directory only.
_POSE_STEMS: dict[tuple[int, str], str] = {
    (133, "0.3b"): "sapiens_0.3b_coco_wholebody_best_coco_wholebody_AP_620",
    (133, "0.6b"): "sapiens_0.6b_coco_wholebody_best_coco_wholebody_AP_695",
    (133, "1b"): "sapiens_1b_coco_wholebody_best_coco_wholebody_AP_727",
    (133, "2b"): "sapiens_2b_coco_wholebody_best_coco_wholebody_AP_745",
    (17, "0.3b"): "sapiens_0.3b_coco_best_coco_AP_796",
    (17, "0.6b"): "sapiens_0.6b_coco_best_coco_AP_812",
    (17, "1b"): "sapiens_1b_coco_best_coco_AP_821",
    (17, "2b"): "sapiens_2b_coco_best_coco_AP_822",
}

#: Released Sapiens2 checkpoints per task (SPEC-sapiens2 §5.1): 22 repositories.
_SAPIENS2_SIZES: dict[str, tuple[str, ...]] = {
    "pretrain": ("0.1b", "0.4b", "0.8b", "1b", "1b-4k", "5b"),
    **{task: ("0.4b", "0.8b", "1b", "5b") for task in ("pose", "seg", "normal", "pointmap")},
}

_NAME2 = re.compile(
    r"^(?:hf://)?facebook/sapiens2-(?P<task>pretrain|pose|seg|normal|pointmap)-"
    r"(?P<size>0\.1b|0\.4b|0\.8b|1b-4k|1b|5b)$"
)
_NAME = re.compile(
    r"^(?:hf://)?(?P<owner>facebook)/sapiens-(?P<task>pose|seg|depth|normal|pretrain)-"
    r"(?P<size>0\.3b|0\.6b|1b|2b)(?:-(?P<fmt>torchscript|bfloat16))?$"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class HubRef:
    """One released checkpoint on the hub.

    Args:
        repo_id: e.g. ``facebook/sapiens-pose-0.3b-torchscript``.
        filenames: candidate file names in that repository, most likely first.
        task: the task the checkpoint was trained for.
        size: backbone size.
        fmt: ``original``, ``torchscript`` or ``bfloat16`` (Sapiens2: ``original`` only, a
            safetensors file).
        family: ``sapiens`` or ``sapiens2``.
    """

    repo_id: str
    filenames: tuple[str, ...]
    task: str
    size: str
    fmt: str
    family: str = "sapiens"


def hub_ref(task: str, size: str, fmt: str = "original", *, family: str = "sapiens") -> HubRef:
    """The hub location of the official ``task``/``size`` checkpoint in format ``fmt``.

    Raises:
        ValueError: unknown family or format (Sapiens2 is released in ``original`` only).
        CheckpointNotFoundError: no such checkpoint was released.
    """
    if family == "sapiens2":
        return _hub_ref2(task, size, fmt)
    if family != "sapiens":
        raise ValueError(f"unknown model family {family!r}; expected 'sapiens' or 'sapiens2'")
    if fmt not in FORMATS:
        raise ValueError(f"unknown checkpoint format {fmt!r}; expected one of {sorted(FORMATS)}")
    stems = _STEMS.get((task, size))
    if stems is None:
        released = sorted(f"{t}/{s}" for t, s in _STEMS)
        msg = f"no released checkpoint for task {task!r} at size {size!r}; released: {released}"
        raise CheckpointNotFoundError(msg)
    repo = f"facebook/sapiens-{task}-{size}" + ("" if fmt == "original" else f"-{fmt}")
    return HubRef(
        repo_id=repo,
        filenames=tuple(s + FORMATS[fmt] for s in stems),
        task=task,
        size=size,
        fmt=fmt,
    )


def released_pose_files(size: str, num_keypoints: int, fmt: str = "original") -> tuple[str, ...]:
    """File names of the released Sapiens pose checkpoint of ``size`` predicting
    ``num_keypoints`` keypoints, most likely first: 308 (the hub's files), 133 or 17 (SPEC §8's
    COCO-WholeBody and COCO files, found in a weights directory only).

    Raises:
        ValueError: unknown format.
        CheckpointNotFoundError: no such checkpoint was released (e.g. 308 keypoints at 2b).
    """
    if num_keypoints == HUB_POSE_KEYPOINTS:
        return hub_ref("pose", size, fmt).filenames
    if fmt not in FORMATS:
        raise ValueError(f"unknown checkpoint format {fmt!r}; expected one of {sorted(FORMATS)}")
    stem = _POSE_STEMS.get((num_keypoints, size))
    if stem is None:
        released = sorted(f"{k}/{s}" for k, s in _POSE_STEMS)
        msg = f"no released {num_keypoints}-keypoint pose checkpoint at size {size!r}; "
        raise CheckpointNotFoundError(msg + f"released (keypoints/size): {released}")
    return (stem + FORMATS[fmt],)


def _hub_ref2(task: str, size: str, fmt: str) -> HubRef:
    if fmt != "original":
        raise ValueError(f"Sapiens2 is released as safetensors only (fmt='original'), got {fmt!r}")
    if size not in _SAPIENS2_SIZES.get(task, ()):
        released = [f"{t}/{s}" for t, sizes in _SAPIENS2_SIZES.items() for s in sizes]
        msg = f"no released Sapiens2 checkpoint for task {task!r} at size {size!r}; released: "
        raise CheckpointNotFoundError(msg + str(released))
    stem = size.replace("-", "_")  # 1b-4k -> sapiens2_1b_4k_pretrain.safetensors
    return HubRef(
        repo_id=f"facebook/sapiens2-{task}-{size}",
        filenames=(f"sapiens2_{stem}_{task}.safetensors",),
        task=task,
        size=size,
        fmt=fmt,
        family="sapiens2",
    )


def parse_hub_name(name: str) -> HubRef | None:
    """``facebook/sapiens-pose-0.3b[-torchscript|-bfloat16]`` or ``facebook/sapiens2-pose-0.4b``
    -> :class:`HubRef`, else None."""
    if m := _NAME2.match(name.strip()):
        return hub_ref(m["task"], m["size"], family="sapiens2")
    m = _NAME.match(name.strip())
    if m is None:
        return None
    return hub_ref(m["task"], m["size"], m["fmt"] or "original")


def hub_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """Where :func:`download` keeps files: ``cache_dir``, else huggingface_hub's cache
    (``HF_HUB_CACHE``, by default ``$HF_HOME/hub``)."""
    if cache_dir is not None:
        return Path(cache_dir)
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def download(
    ref: HubRef,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
) -> Path:
    """Fetch ``ref`` into the hub cache (or find it there) and return the local path.

    Tries each candidate file name; with no network (or ``HF_HUB_OFFLINE=1``) a cached copy is
    used. Raises :class:`CheckpointNotFoundError` naming the repository, the files tried and
    the ways to make the file available.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    errors: list[str] = []
    for filename in ref.filenames:
        try:
            path = hf_hub_download(
                ref.repo_id,
                filename,
                revision=revision,
                cache_dir=cache_dir,
                local_files_only=local_files_only,
            )
        except (EntryNotFoundError, LocalEntryNotFoundError) as e:
            errors.append(f"{filename}: {type(e).__name__}")
            continue
        except OSError as e:  # network errors surface as OSError subclasses
            errors.append(f"{filename}: {e}")
            continue
        logger.debug("resolved %s/%s to %s", ref.repo_id, filename, path)
        return Path(path)
    msg = (
        f"checkpoint {ref.repo_id} is neither reachable on the hub nor in the local cache "
        f"(tried {'; '.join(errors)}). Connect to the network once, run "
        f"`huggingface-cli download {ref.repo_id}`, or pass a local file path instead."
    )
    raise CheckpointNotFoundError(msg)
