"""PersonStage: tracking counts sampled frames, and a job resumes from a checkpoint with the
same track ids as an uninterrupted run."""

from __future__ import annotations

import numpy as np

from actors.messages import FrameBatch
from actors.persons import PersonStage

STRIDE = 40  # far above the tracker's max_age (30): ages must count sampled frames


def _boxes(n_frames: int, gap_at: int | None = None) -> dict[int, list[list[float]]]:
    """Two people walking right, one of them missing from one sampled frame."""
    out = {}
    for k in range(n_frames):
        rows = [[10.0 + 3 * k, 10.0, 40.0 + 3 * k, 80.0]]
        if k != gap_at:
            rows.append([120.0 - 2 * k, 20.0, 150.0 - 2 * k, 90.0])
        out[k * STRIDE] = rows
    return out


def _batches(n_frames: int, size: int) -> list[FrameBatch]:
    out = []
    for b, start in enumerate(range(0, n_frames, size)):
        k = np.arange(start, min(start + size, n_frames))
        out.append(
            FrameBatch(
                job_id="j",
                batch_index=b,
                frames=np.zeros((len(k), 100, 200, 3), np.uint8),
                source_index=(k * STRIDE).astype(np.int64),
                pts=np.full(len(k), -1, np.int64),
                time_s=k * STRIDE / 25.0,
                is_last=start + size >= n_frames,
            )
        )
    return out


def _ids(stage: PersonStage, batches: list[FrameBatch]) -> list[np.ndarray]:
    return [stage(b)[1] for b in batches]


def test_tracks_survive_a_large_stride() -> None:
    stage = PersonStage("boxes", {"boxes_by_source_index": _boxes(12, gap_at=5)})
    ids = np.concatenate(_ids(stage, _batches(12, 4)))
    assert set(ids.tolist()) == {1, 2}  # two people, two ids, over 12 * 40 source frames


def test_resuming_from_a_checkpoint_gives_the_same_ids() -> None:
    options = {"boxes_by_source_index": _boxes(12, gap_at=5)}
    batches = _batches(12, 4)
    clean = _ids(PersonStage("boxes", options), batches)
    first = PersonStage("boxes", options)
    _ids(first, batches[:2])
    cp = first.checkpoint()
    assert cp.frames == 8 and cp.next_source_index == 7 * STRIDE + 1
    resumed = PersonStage("boxes", options, tracker_state=dict(cp.tracker))
    rest = _ids(resumed, batches[2:])
    for a, b in zip(clean[2:], rest, strict=True):
        assert np.array_equal(a, b)


def test_corrupt_and_crowded_frames_have_no_persons_and_leave_the_tracker_alone() -> None:
    """A corrupt frame (black, flagged by decode) and a frame with more detections than the
    store holds (``max_persons``) get no persons; the second is listed as skipped; tracking
    around them gives the same ids as a run that never saw them."""
    boxes = _boxes(6)
    crowd = 4 * STRIDE
    boxes[crowd] = [[float(x), 0.0, float(x) + 5, 5.0] for x in range(0, 100, 10)]  # 10 people
    (batch,) = _batches(6, 6)
    flags = np.zeros(6, bool)
    flags[2] = True  # the decoder flagged frame 2
    batch = FrameBatch(
        job_id="j",
        batch_index=0,
        frames=batch.frames,
        source_index=batch.source_index,
        pts=batch.pts,
        time_s=batch.time_s,
        is_last=True,
        corrupt=flags,
    )
    stage = PersonStage("boxes", {"boxes_by_source_index": boxes}, max_persons=3)
    persons = stage.tracked(batch)
    assert persons.skipped == (4,)
    assert set(persons.frame.tolist()) == {0, 1, 3, 5}
    assert stage.checkpoint().frames == 6  # both still take their frame step
    # The same frames without the two: the tracks get the same ids.
    kept = [0, 1, 3, 5]
    plain = {k * STRIDE: boxes[k * STRIDE] for k in kept}
    alone = PersonStage("boxes", {"boxes_by_source_index": plain}).tracked(batch)
    assert persons.track_id.tolist() == alone.track_id[np.isin(alone.frame, kept)].tolist()


def test_detections_the_tracker_leaves_untracked_are_kept_with_their_score() -> None:
    """Boxes scored 0.3-0.6 that match no track (too weak to start one) stay persons, with
    their score and track id -1; tracked ones keep their ids."""
    boxes = {
        0: [[10.0, 10.0, 40.0, 80.0, 0.9], [120.0, 10.0, 150.0, 80.0, 0.4]],
        STRIDE: [
            [12.0, 10.0, 42.0, 80.0, 0.9],
            [60.0, 20.0, 90.0, 90.0, 0.55],
            [150.0, 5.0, 190.0, 60.0, 0.3],
        ],
    }
    stage = PersonStage("boxes", {"boxes_by_source_index": boxes})
    persons = stage.tracked(_batches(2, 2)[0])
    assert persons.frame.tolist() == [0, 0, 1, 1, 1]
    assert persons.track_id.tolist() == [1, -1, 1, -1, -1]
    np.testing.assert_allclose(persons.scores, [0.9, 0.4, 0.9, 0.55, 0.3])
    np.testing.assert_array_equal(persons.boxes[3], [60.0, 20.0, 90.0, 90.0])
