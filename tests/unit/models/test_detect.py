"""Tests for models.detect: the Detections container, Sapiens' demo filter and the detectors."""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from contextlib import nullcontext as does_not_raise
from pathlib import Path
from typing import Any
from urllib.error import URLError

import numpy as np
import pytest
import torch
from kornia.core import download as kornia_download
from kornia.models.rt_detr.model import RTDETR, URLs
from torch import Tensor, nn

from models._boxes import pairwise_iou
from models.detect import (
    COCO_PERSON,
    DetectionError,
    Detections,
    DetectorWeightsUnavailableError,
    FullFrameDetector,
    GivenBoxesDetector,
    RTDETRDetector,
    build_detector,
    filter_persons,
)
from models.errors import CheckpointError, CheckpointNotFoundError, ModelError

R18 = "rtdetr_r18vd"
R18_FILE = "rtdetr_r18vd_dec3_6x_coco_from_paddle.pth"
SMALL = 128  # smallest input RT-DETR's 300 queries allow: keeps the CPU forward short


def _dets(boxes: list[list[float]], scores: list[float], frame: list[int]) -> Detections:
    return Detections(
        boxes_xyxy=np.asarray(boxes, np.float32).reshape(-1, 4),
        scores=np.asarray(scores, np.float32),
        frame=np.asarray(frame, np.int64),
    )


def _frames(b: int = 2, h: int = 48, w: int = 64) -> Tensor:
    return torch.zeros(b, 3, h, w, dtype=torch.uint8)


# --- Detections ----------------------------------------------------------------------------------

_OK = {
    "boxes_xyxy": np.array([[0, 0, 10, 20], [5, 5, 5, 5]], np.float32),
    "scores": np.array([0.9, 0.5], np.float32),
    "frame": np.array([0, 1], np.int64),
}


@pytest.mark.parametrize(
    ("override", "expectation"),
    [
        ({}, does_not_raise()),
        ({"boxes_xyxy": _OK["boxes_xyxy"].astype(np.float64)},
         pytest.raises(DetectionError, match="boxes_xyxy: expected dtype float32, got float64")),
        ({"boxes_xyxy": np.zeros((2, 3), np.float32)},
         pytest.raises(DetectionError, match=r"boxes_xyxy: expected shape \(N, 4\), got \(2, 3\)")),
        ({"scores": [0.9, 0.5]},
         pytest.raises(DetectionError, match="scores: expected a numpy array, got list")),
        ({"scores": np.ones(3, np.float32)},
         pytest.raises(DetectionError, match="scores: expected 2 rows like boxes_xyxy, got 3")),
        ({"frame": np.array([0, 1], np.int32)},
         pytest.raises(DetectionError, match="frame: expected dtype int64, got int32")),
        ({"frame": np.array([0, -1], np.int64)},
         pytest.raises(DetectionError, match="frame: expected indices >= 0, got -1")),
        ({"boxes_xyxy": np.array([[0, 0, 10, 20], [0, 0, np.nan, 1]], np.float32)},
         pytest.raises(DetectionError, match=r"expected finite coordinates.*row 1")),
        ({"boxes_xyxy": np.array([[0, 0, 10, 20], [9, 0, 8, 1]], np.float32)},
         pytest.raises(DetectionError, match="expected x2 >= x1 and y2 >= y1")),
        ({"scores": np.array([0.9, np.inf], np.float32)},
         pytest.raises(DetectionError, match="scores: expected finite values")),
    ],
)  # fmt: skip
def test_detections_validation(
    override: dict[str, Any], expectation: AbstractContextManager[object]
) -> None:
    with expectation:
        Detections(**{**_OK, **override})


def test_detection_error_is_a_model_error_and_a_value_error() -> None:
    assert issubclass(DetectionError, ModelError)
    assert issubclass(DetectionError, ValueError)


def test_detections_empty_for_frame_concat() -> None:
    empty = Detections.empty()
    assert len(empty) == 0
    assert empty.boxes_xyxy.shape == (0, 4)
    d = Detections(**_OK)
    one = d.for_frame(1)
    assert one.boxes_xyxy.tolist() == [[5, 5, 5, 5]]
    assert one.frame.tolist() == [1]
    assert len(d.for_frame(7)) == 0
    both = Detections.concat([d, one])
    assert len(both) == 3
    assert both.frame.tolist() == [0, 1, 1]
    assert len(Detections.concat([])) == 0


# --- filter_persons --------------------------------------------------------------------------

# A = [0, 0, 9, 9] and B = [5, 0, 14, 9] by hand. Pixel-inclusive: each is 10 x 10 = 100, the
# overlap is columns 5..9 (5) x rows 0..9 (10) = 50, IoU = 50 / (200 - 50) = 1/3 > 0.3.
# Continuous: each is 9 x 9 = 81, the overlap 4 x 9 = 36, IoU = 36 / 126 = 0.2857 < 0.3.
A, B = [0.0, 0.0, 9.0, 9.0], [5.0, 0.0, 14.0, 9.0]


def test_iou_conventions_on_the_hand_example() -> None:
    assert pairwise_iou([A], [B], plus_one=True)[0, 0] == pytest.approx(1 / 3)
    assert pairwise_iou([A], [B], plus_one=False)[0, 0] == pytest.approx(36 / 126)


def test_nms_suppresses_with_plus_one_areas() -> None:
    # Only the +1 convention suppresses B (1/3 > 0.3); the continuous one would keep it.
    assert filter_persons([A, B], [0.9, 0.8]).tolist() == [0]


def test_iou_exactly_at_threshold_survives() -> None:
    # [0, 0, 2, 9] is 3 x 10 = 30 pixels inside A's 100: IoU = 30 / 100 = 0.3, not > 0.3.
    assert filter_persons([A, [0, 0, 2, 9]], [0.9, 0.8]).tolist() == [0, 1]


def test_score_threshold_is_strict() -> None:
    far = [100.0, 100.0, 120.0, 140.0]
    assert filter_persons([A, far], [0.3, 0.31]).tolist() == [1]
    assert filter_persons([A, far], [0.3, 0.31], score_thr=0.2).tolist() == [1, 0]


def test_greedy_order_a_suppressed_box_suppresses_nothing() -> None:
    # Hand-computed +1 IoUs: hi-lo = 80/120 = 0.67, hi-c = 40/160 = 0.25, lo-c = 60/140 = 0.43.
    hi, lo, c = [0, 0, 9, 9], [2, 0, 11, 9], [6, 0, 15, 9]
    # hi (0.9) drops lo (0.67 > 0.3) but keeps c (0.25); lo never gets to drop c.
    assert filter_persons([lo, hi, c], [0.5, 0.9, 0.7]).tolist() == [1, 2]


def test_equal_scores_keep_the_first_box_and_torch_inputs_work() -> None:
    boxes = torch.tensor([A, A, [50.0, 50.0, 60.0, 60.0]])
    assert filter_persons(boxes, torch.tensor([0.8, 0.8, 0.4])).tolist() == [0, 2]


def test_filter_persons_edge_cases() -> None:
    keep = filter_persons(np.zeros((0, 4)), np.zeros(0))
    assert keep.dtype == np.int64
    assert keep.shape == (0,)
    with pytest.raises(DetectionError, match=r"expected shapes \(N, 4\) and \(N,\)"):
        filter_persons([A, B], [0.9])


# --- full-frame and given-boxes detectors ----------------------------------------------------


def test_full_frame_detector() -> None:
    d = FullFrameDetector()(_frames(3, 48, 64), torch.tensor([10, 11, 12]))
    assert d.boxes_xyxy.tolist() == [[0, 0, 64, 48]] * 3
    assert d.scores.tolist() == [1.0] * 3
    assert d.frame.tolist() == [0, 1, 2]


def test_given_boxes_detector_looks_up_source_index() -> None:
    det = GivenBoxesDetector({10: [[1, 2, 3, 4], [5, 6, 7, 8]], 12: np.array([[0, 0, 9, 9]])})
    d = det(_frames(3), np.array([10, 11, 12]))
    assert d.boxes_xyxy.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8], [0, 0, 9, 9]]
    assert d.frame.tolist() == [0, 0, 2]  # source index 11 has no entry: no boxes
    assert d.scores.tolist() == [1.0] * 3
    assert len(det(_frames(1), torch.tensor([99]))) == 0
    empty = GivenBoxesDetector({3: [], 4: [[1, 1, 5, 5]]})  # [] = nobody in that frame
    assert empty(_frames(2), np.array([3, 4])).frame.tolist() == [1]


@pytest.mark.parametrize(
    ("table", "match"),
    [
        ({7: [[0, 0, 5, 5], [3, 3, 3, 9]]},
         r"source index 7: expected x2 > x1 and y2 > y1, got \[3.0, 3.0, 3.0, 9.0\] in row 1"),
        ({7: [[0, 0, np.inf, 5]]}, "source index 7: expected finite coordinates"),
        ({7: [0, 0, 5, 5]}, r"source index 7: expected shape \(N, 4\).*got \(4,\)"),
        ({"7": [[0, 0, 5, 5]]}, "expected int keys >= 0, got '7'"),
        ({-1: [[0, 0, 5, 5]]}, "expected int keys >= 0, got -1"),
    ],
)  # fmt: skip
def test_given_boxes_validation(table: dict[Any, Any], match: str) -> None:
    with pytest.raises(DetectionError, match=match):
        GivenBoxesDetector(table)


@pytest.mark.parametrize("detector", [FullFrameDetector(), GivenBoxesDetector({})])
@pytest.mark.parametrize(
    ("frames", "source_index", "match"),
    [
        (_frames().float(), [0, 1], "frames: expected dtype torch.uint8, got torch.float32"),
        (torch.zeros(2, 4, 8, 8, dtype=torch.uint8), [0, 1], r"frames: expected a \(B, 3, H, W\)"),
        (_frames(), [0], r"source_index: expected \(2,\) integers, got \(1,\)"),
        (_frames(), [0.0, 1.0], r"source_index: expected \(2,\) integers, got \(2,\) float64"),
    ],
)  # fmt: skip
def test_detectors_check_their_inputs(
    detector: FullFrameDetector, frames: Tensor, source_index: list[float], match: str
) -> None:
    with pytest.raises(DetectionError, match=match):
        detector(frames, np.asarray(source_index))


@pytest.mark.parametrize(
    ("kind", "options", "expectation"),
    [
        ("full-frame", {}, does_not_raise()),
        ("boxes", {"boxes_by_source_index": {0: [[0, 0, 1, 1]]}}, does_not_raise()),
        ("yolo", {}, pytest.raises(DetectionError, match=r"kind: expected one of \['boxes'")),
        ("full-frame", {"input_size": 640},
         pytest.raises(DetectionError, match=r"unknown option\(s\) \['input_size'\]; valid: \[\]")),
        ("boxes", {}, pytest.raises(DetectionError, match=r"missing option.*boxes_by_source")),
        ("rtdetr", {"input_size": 100}, pytest.raises(DetectionError, match="multiple of 32")),
        ("rtdetr", {"model_name": "rtdetr_x"}, pytest.raises(DetectionError, match="model_name")),
    ],
)  # fmt: skip
def test_build_detector(
    kind: Any, options: dict[str, Any], expectation: AbstractContextManager[object]
) -> None:
    with expectation:
        assert callable(build_detector(kind, **options))


# --- RT-DETR ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def random_rtdetr() -> RTDETRDetector:
    """RT-DETR-R18 with random weights: its boxes and scores are meaningless."""
    torch.manual_seed(0)
    detector = build_detector("rtdetr", pretrained=False, input_size=SMALL, score_thr=0.0)
    assert isinstance(detector, RTDETRDetector)
    return detector


def _decode(path: Path, count: int) -> Tensor:
    av = pytest.importorskip("av")
    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            frames.append(torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1))
            if len(frames) == count:
                break
    return torch.stack(frames)


def test_rtdetr_random_weights_full_pipeline_on_a_real_frame(
    random_rtdetr: RTDETRDetector, shared_clip: Path
) -> None:
    # Random weights: only the plumbing is checked (resize -> model -> person column ->
    # rescale -> NMS -> Detections), never what was found. score_thr=0 lets every query through.
    frames = _decode(shared_clip, 2)
    assert frames.shape == (2, 3, 720, 1280)
    d = random_rtdetr(frames, torch.tensor([0, 1]))
    assert len(d) > 0
    assert set(d.frame.tolist()) <= {0, 1}
    assert (d.boxes_xyxy >= 0).all()
    assert (d.boxes_xyxy[:, [0, 2]] <= 1280).all()
    assert (d.boxes_xyxy[:, [1, 3]] <= 720).all()
    for i in (0, 1):
        one = d.for_frame(i)
        assert (np.diff(one.scores) <= 0).all()  # NMS order: highest score first
        iou = pairwise_iou(one.boxes_xyxy, one.boxes_xyxy, plus_one=True)
        assert (iou[~np.eye(len(one), dtype=bool)] <= 0.3).all()


class _FixedOutputs(nn.Module):
    """Stands in for the network: records its input and returns set (logits, boxes)."""

    def __init__(self, logits: Tensor, boxes: Tensor) -> None:
        super().__init__()
        self.logits, self.boxes = logits, boxes
        self.seen: Tensor | None = None

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self.seen = x
        return self.logits, self.boxes


def test_rtdetr_post_processing_by_hand(
    random_rtdetr: RTDETRDetector, monkeypatch: pytest.MonkeyPatch
) -> None:
    logits = torch.full((1, 4, 80), -9.0)
    logits[0, :, COCO_PERSON] = torch.tensor([2.0, -5.0, 1.0, 0.5])
    logits[0, 2, 5] = 10.0  # a confident non-person class must not raise the person score
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.4], [0.1, 0.1, 0.1, 0.1],
                           [0.51, 0.5, 0.2, 0.4], [0.9, 0.9, 0.4, 0.4]]])  # fmt: skip
    stub = _FixedOutputs(logits, boxes)
    monkeypatch.setattr(random_rtdetr, "_model", stub)
    monkeypatch.setattr(random_rtdetr, "score_thr", 0.3)
    frames = torch.full((1, 3, 720, 1280), 255, dtype=torch.uint8)
    d = random_rtdetr(frames, torch.tensor([5]))
    assert stub.seen is not None
    assert stub.seen.shape == (1, 3, SMALL, SMALL)
    assert torch.allclose(stub.seen, torch.ones_like(stub.seen))  # 255 -> 1.0, no mean/std
    # q0: cx 640, cy 360, w 256, h 288; q1: score 0.007 < 0.3; q2: overlaps q0 (suppressed);
    # q3: cx 1152 +- 256 clipped to 1280, cy 648 +- 144 clipped to 720.
    np.testing.assert_allclose(d.boxes_xyxy, [[512, 216, 768, 504], [896, 504, 1280, 720]])
    np.testing.assert_allclose(d.scores, torch.sigmoid(torch.tensor([2.0, 0.5])), rtol=1e-6)
    assert d.frame.tolist() == [0, 0]


def _fail_offline(url: list[str], **kwargs: Any) -> dict[str, Tensor]:
    """What kornia's downloader raises when no source is reachable."""
    msg = f"Failed to load weights from all {len(url)} source(s). Last error: URLError"
    raise RuntimeError(msg) from URLError("Name or service not known")


def test_missing_weights_offline_raise_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[list[str], dict[str, Any]]] = []

    def fake(url: list[str], **kwargs: Any) -> dict[str, Tensor]:
        calls.append((url, kwargs))
        return _fail_offline(url, **kwargs)

    monkeypatch.setattr(kornia_download, "load_state_dict_from_url", fake)
    start = time.perf_counter()
    with pytest.raises(DetectorWeightsUnavailableError) as info:
        RTDETRDetector(download_timeout=3.0)
    assert time.perf_counter() - start < 2.0  # fails before building the model
    assert calls == [(list(URLs[R18]), {"map_location": "cpu", "timeout": 3.0})]
    message = str(info.value)
    for needed in (R18_FILE, URLs[R18][0], "weights=", str(Path(torch.hub.get_dir()))):
        assert needed in message
    assert isinstance(info.value, CheckpointNotFoundError)
    assert isinstance(info.value, FileNotFoundError)
    assert isinstance(info.value, ModelError)


@pytest.mark.filterwarnings("ignore:(Transient failure|Failed to load weights):UserWarning")
def test_real_download_attempt_fails_fast_without_network(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # kornia's real downloader against a reserved, never-resolvable host: a genuine network
    # attempt that fails fast here (offline) and anywhere else, and never fetches 80 MB.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    monkeypatch.setitem(URLs, R18, [f"https://weights.invalid/{R18_FILE}"])
    monkeypatch.setattr(kornia_download, "_BACKOFF_SECONDS", 0.0, raising=False)  # no retry sleep
    with pytest.raises(DetectorWeightsUnavailableError, match=R18_FILE) as info:
        build_detector("rtdetr", download_timeout=2.0)
    assert str(tmp_path / "hub" / "checkpoints" / R18_FILE) in str(info.value)
    assert isinstance(info.value.__cause__, RuntimeError)


def test_missing_local_weights_file(tmp_path: Path) -> None:
    with pytest.raises(DetectorWeightsUnavailableError, match=f"does not exist.*{R18_FILE}"):
        RTDETRDetector(weights=tmp_path / R18_FILE)


def _reference_name(kornia_name: str) -> str:
    """Inverse of the loader's renaming: kornia parameter name -> published checkpoint name."""
    return kornia_name.replace("encoder.ccfm.", "encoder.").replace(".convs.branch2", ".branch2")


@pytest.fixture
def reference_checkpoint(tmp_path: Path) -> tuple[Path, nn.Module]:
    """A random R18 saved in the published layout: {"ema": {"module": reference names}}."""
    torch.manual_seed(1)
    model = RTDETR.from_name(R18)
    state = {_reference_name(k): v for k, v in model.state_dict().items()}
    path = tmp_path / R18_FILE
    torch.save({"ema": {"module": state, "updates": 1}}, path)
    return path, model


def test_local_weights_in_the_published_layout_load_strictly(
    reference_checkpoint: tuple[Path, nn.Module],
) -> None:
    path, model = reference_checkpoint
    detector = RTDETRDetector(weights=path, input_size=SMALL)
    loaded = detector._model.state_dict()
    expected = model.state_dict()
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)


def _hub_cache_with(cache: Path, repo: str, filename: str, payload: Path) -> None:
    """``payload`` laid out as huggingface_hub's cache holds a downloaded file."""
    root = cache / ("models--" + repo.replace("/", "--"))
    commit = "1" * 40
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    target = root / "snapshots" / commit / filename
    target.parent.mkdir(parents=True)
    target.write_bytes(payload.read_bytes())


def test_weights_by_hub_name_load_from_the_hub_cache_offline(
    reference_checkpoint: tuple[Path, nn.Module], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    path, model = reference_checkpoint
    cache = tmp_path / "hf"
    _hub_cache_with(cache, "someorg/rtdetr", f"weights/{R18_FILE}", path)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    detector = build_detector(
        "rtdetr", weights=f"hf://someorg/rtdetr/weights/{R18_FILE}", input_size=SMALL
    )
    loaded, expected = detector._model.state_dict(), model.state_dict()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)
    with pytest.raises(DetectorWeightsUnavailableError, match="someorg/other"):
        build_detector("rtdetr", weights=f"hf://someorg/other/{R18_FILE}")
    with pytest.raises(DetectorWeightsUnavailableError, match="expected hf://owner/repo/file"):
        build_detector("rtdetr", weights="hf://someorg/rtdetr")


def test_local_weights_that_do_not_fit(tmp_path: Path) -> None:
    path = tmp_path / "other.pth"
    torch.save({"head.foo": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match=r"do not fit.*1 unexpected, e.g. \['head.foo'\]"):
        RTDETRDetector(weights=path)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read RT-DETR weights"):
        RTDETRDetector(weights=path)


def test_detector_device_follows_the_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """``auto`` is CUDA exactly where the process has a GPU; ``cuda`` without one is a clear
    error (stand-in: torch.cuda.is_available, as these machines have no GPU)."""
    from models.detect import detector_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert (detector_device("auto"), detector_device("cpu")) == ("cpu", "cpu")
    with pytest.raises(DetectionError, match="'cuda', but the person stage has no GPU"):
        detector_device("cuda")
    with pytest.raises(DetectionError, match="expected one of"):
        detector_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert (detector_device("auto"), detector_device("cuda")) == ("cuda", "cuda")
    assert detector_device("cpu") == "cpu"


def test_a_detector_built_directly_resolves_auto(tmp_path: Path) -> None:
    """``build_detector`` with a job's own options (``device: auto``), as one-process runs and
    the benchmarks build it, runs on this process's device."""
    detector = build_detector("rtdetr", pretrained=False, input_size=SMALL, device="auto")
    assert next(detector._model.parameters()).device.type == "cpu"
