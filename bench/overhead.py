"""Host overhead of the whole pipeline at GPU speed, on a CPU machine.

The real pipeline runs on a local Ray cluster: PyAV decodes a real 1080p video, the person stage
tracks given boxes (detector ``boxes``, 3 boxes of about 300x600 px per frame), the Sapiens
actor builds the real storage records and the writer commits them to a real Zarr store on disk.
Only the device-side work (crops, forward, decoding, reduction) is replaced by a stand-in: it
sleeps for the device time a GPU would take (``--device-ms-per-person``; default 22 ms, the
H100 bf16 time of the four released 0.3B task models per person) and returns what leaves the
device in the real shapes and dtypes (``bench._standin.device_outputs``). Whatever else costs
time or CPU is host overhead: decode, transport, orchestration, writing.

Prints one JSON object: frames/s against the stand-in's ceiling (one Sapiens actor:
``1000 / (device_ms_per_person * persons)`` frames/s) and their ratio; CPU-seconds per frame of
each stage's process; result bytes through the object store per frame next to the uncompressed
bytes the store keeps of it; whether frames cross Ray at most once; the peak resident memory;
and, separately, the CPU cost per frame of RT-DETR person detection (random weights, written
here to a local file in the published layout) on 1080p frames.

    python bench/overhead.py                 # 300 frames, 22 ms per person, 3 persons
    python bench/overhead.py --quick         # a short run (smoke test)
    python bench/overhead.py --device-ms-per-person 11 --out bench/results/x.json

The stand-in takes the real Sapiens actor's place in ``flows.ownactors`` for the run (a
subclass of ``SapiensWorker`` whose analyzer call is the stand-in; the class is what
``ray.remote`` ships, so the worker process runs it); the actor's dynamic batcher, record
building and counters are the real code.

How the numbers are taken. The window opens at the first commit at or past ``--warmup-frames``
and closes at the last one (the job's progress callback). Frames/s: commits in the window over
its seconds. CPU: utime + stime from ``/proc/<pid>/stat`` of each stage's process (found from
its named actor), the driver (less this script's memory sampler thread) and the rest of the
cluster (``ray_system``: raylet, GCS, agents), before and after the window, over the frames
that stage handled in it (clock ticks: 10 ms). Result bytes: each Sapiens call's return value
pickled with protocol 5, out-of-band buffers counted, in the actor. Stored bytes: one frame's
records encoded by ``storage._encode.encode_frame``. Crossings: see ``CROSSINGS_HOW``. Peak
RSS: ``bench.pipeline.PeakRSS`` (driver plus every Ray process; shared object-store pages
count in each process that maps them). Detection: ``time.process_time`` around the call.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # before bench/, whose models.py is not the models package

import numpy as np  # noqa: E402
import torch  # noqa: E402

from actors.infer import FrameMeta, frame_records  # noqa: E402
from actors.messages import PersonBatch  # noqa: E402
from bench._standin import DEFAULT_DEVICE_MS, device_outputs, sapiens_stand_in  # noqa: E402
from bench.pipeline import PeakRSS  # noqa: E402
from models.spec import INPUT_SIZE  # noqa: E402
from storage import StoreSpec, ZarrLayout, open_result  # noqa: E402
from storage._encode import encode_frame  # noqa: E402

CLIP = ROOT.parent / "shared" / "data" / "people_walking_720p.avi"
FRAME_HW = (1080, 1920)
BOX_WH = (300, 600)
FPS = 25
TASKS = ("pose", "seg", "depth", "normal")
STAGES = ("decode", "persons", "sapiens", "writer")
_ACTOR_STAGE = {"decode": "decode", "persons": "persons", "writer": "writer", "infer": "sapiens"}
_TICK = os.sysconf("SC_CLK_TCK")


# -- input ----------------------------------------------------------------------------------------
def _source_frames(clip: Path, n: int) -> Iterator[Any]:
    """``n`` frames of ``clip`` (looped), or of a synthetic scene when it does not exist."""
    import av

    if not clip.is_file():
        rng = np.random.default_rng(0)
        base = rng.integers(0, 255, (360, 640, 3), np.uint8)
        for i in range(n):
            yield av.VideoFrame.from_ndarray(np.roll(base, 4 * i, axis=1), format="rgb24")
        return
    done = 0
    while done < n:
        with av.open(str(clip)) as src:
            for frame in src.decode(video=0):
                yield frame
                done += 1
                if done == n:
                    return


def make_clip(path: Path, frames: int, clip: Path = CLIP) -> str:
    """Encode ``frames`` 1080p frames of ``clip`` (upscaled) to ``path``; returns the codec."""
    import av

    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=FPS)
        stream.width, stream.height = FRAME_HW[1], FRAME_HW[0]
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"preset": "veryfast", "crf": "23"}
        for i, frame in enumerate(_source_frames(clip, frames)):
            big = frame.reformat(width=FRAME_HW[1], height=FRAME_HW[0], format="yuv420p")
            big.pts, big.time_base = i, Fraction(1, FPS)
            out.mux(stream.encode(big))
        out.mux(stream.encode(None))
    return codec


def given_boxes(frames: int, persons: int) -> dict[str, list[list[float]]]:
    """``persons`` boxes of about 300x600 px per frame, side by side, drifting slowly."""
    w, h = BOX_WH
    lane = FRAME_HW[1] / persons
    out = {}
    for i in range(frames):
        row = []
        for k in range(persons):
            x0 = lane * (k + 0.5) - w / 2 + 40 * math.sin(2 * math.pi * i / 75 + k)
            y0 = 240 + 20 * math.sin(2 * math.pi * i / 50 + k)
            row.append([round(x0, 2), round(y0, 2), round(x0 + w, 2), round(y0 + h, 2)])
        out[str(i)] = row
    return out


# -- measurements ---------------------------------------------------------------------------------
def _cpu_s(pid: int, tid: int | None = None) -> float:
    """utime + stime of a process (all its threads) or one of its threads, in seconds."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    try:
        fields = Path(path).read_text().rsplit(")", 1)[1].split()
    except OSError:  # gone
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            ppid = int(Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(name))
    out, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.add(child)
            todo.append(child)
    return out


def _machine_busy_s() -> float:
    """CPU seconds every CPU of the machine has spent busy (``/proc/stat``), all processes."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / _TICK  # less idle and iowait


def _actor_pid(_actor: object) -> int:
    return os.getpid()


def plasma_created() -> dict[str, int]:
    """Objects and bytes ever created in the object store, and bytes spilled (cluster-wide)."""
    import ray
    from ray._private.internal_api import get_memory_info_reply, get_state_from_address

    reply = get_memory_info_reply(get_state_from_address(ray.get_runtime_context().gcs_address))
    s = reply.store_stats
    return {
        "objects": int(s.cumulative_created_objects),
        "bytes": int(s.cumulative_created_bytes),
        "spilled_bytes": int(s.spilled_bytes_total),
    }


@dataclass(frozen=True, slots=True)
class _Snapshot:
    t: float
    committed: int
    decoded: int
    cpu: dict[str, float]
    sent: dict[str, float]
    others: float  # CPU seconds of every process on the machine outside this run


class Window:
    """The measured window of one job: from the first commit at or past ``warmup_frames`` (the
    actors have started, the store exists) to the last commit. Called as the job's progress
    callback; each call reads the CPU time of every process of the cluster."""

    def __init__(self, job_id: str, warmup_frames: int, sampler: PeakRSS) -> None:
        self.job_id, self.warmup_frames, self.sampler = job_id, warmup_frames, sampler
        self.pids: dict[str, set[int]] = {}
        self.sapiens: Any = None
        self.start: _Snapshot | None = None
        self.end: _Snapshot | None = None

    def __call__(self, committed: int, decoded: int) -> None:
        if self.start is None and committed >= self.warmup_frames:
            self._find_processes()
            self.start = self._snapshot(committed, decoded)
        elif self.start is not None:
            self.end = self._snapshot(committed, decoded)

    def _find_processes(self) -> None:
        """Each stage's process from its named actor; the rest of the cluster (raylet, GCS,
        agents, idle workers) is ``ray_system``."""
        import ray

        prefix = f"sapiens-stream/{self.job_id}/"
        for name in ray.util.list_named_actors():
            stage = _ACTOR_STAGE.get(name[len(prefix) :].split("/")[0])
            if not name.startswith(prefix) or stage is None:
                continue
            handle = ray.get_actor(name)
            pid = ray.get(handle.__ray_call__.remote(_actor_pid))
            self.pids.setdefault(stage, set()).add(pid)
            if stage == "sapiens":
                self.sapiens = handle
        missing = [s for s in STAGES if s not in self.pids]
        if missing:
            raise RuntimeError(f"job {self.job_id}: no actor found for stage(s) {missing}")
        known = set().union(*self.pids.values())
        self.pids["ray_system"] = _descendants(os.getpid()) - known

    def _snapshot(self, committed: int, decoded: int) -> _Snapshot:
        import ray

        cpu = {stage: sum(_cpu_s(p) for p in pids) for stage, pids in self.pids.items()}
        # The driver without this benchmark's memory sampler thread.
        sampler = _cpu_s(os.getpid(), self.sampler.native_id)
        cpu["driver"] = _cpu_s(os.getpid()) - sampler
        others = _machine_busy_s() - sum(cpu.values()) - sampler
        sent = ray.get(self.sapiens.sent.remote())
        return _Snapshot(time.perf_counter(), committed, decoded, cpu, sent, others)

    def report(self) -> dict[str, Any]:
        a, b = self.start, self.end
        if a is None or b is None or b.committed <= a.committed:
            msg = "no measured window: give more --frames than --warmup-frames + 2 batches"
            raise RuntimeError(msg)
        wall, frames, decoded = b.t - a.t, b.committed - a.committed, b.decoded - a.decoded
        sent = {k: b.sent[k] - a.sent[k] for k in b.sent}
        # Each stage's CPU time over the frames it handled in the window: decode and persons
        # run up to max_in_flight batches ahead of the commits (their frames are those whose
        # batches reached the driver), the Sapiens actor counts its own frames.
        per = {s: decoded if s in ("decode", "persons") else frames for s in b.cpu}
        per["sapiens"] = int(sent["frames"])
        cpu = {s: (b.cpu[s] - a.cpu[s]) / per[s] if per[s] else None for s in b.cpu}
        return {
            "frames": frames,
            "decoded_frames": decoded,
            "sapiens_frames": per["sapiens"],
            "seconds": round(wall, 3),
            "frames_per_s": frames / wall,
            "cpu_s_per_frame": {k: None if v is None else round(v, 5) for k, v in cpu.items()},
            "cpu_s_per_frame_total": round(sum(v or 0.0 for v in cpu.values()), 5),
            "cpu_cores_busy": round(sum(b.cpu[s] - a.cpu[s] for s in b.cpu) / wall, 3),
            # Anything else that ran on the machine meanwhile (the numbers are only clean
            # when this is near 0).
            "cpu_cores_busy_outside_the_run": round(max(0.0, b.others - a.others) / wall, 3),
            "result_bytes_per_frame": sent["result_bytes"] / max(1, sent["frames"]),
            "stand_in_outputs_cpu_s_per_frame": round(
                sent["outputs_cpu_s"] / max(1, sent["frames"]), 5
            ),
        }


def stored_bytes_per_frame(spec: StoreSpec, boxes: list[list[float]]) -> int:
    """Uncompressed bytes the store keeps of one frame: the real records of one frame with
    ``boxes`` (``actors.infer.frame_records``) encoded to the store's rows
    (``storage._encode.encode_frame``): every person row, map and per-person patch (at its own
    size, not the slot's padding), plus the frame's scalars."""
    n = len(boxes)
    shape = (1, 3, spec.source_height, spec.source_width)
    b, f, s = torch.tensor(boxes), torch.zeros(n, dtype=torch.int64), torch.ones(n)
    res = device_outputs(shape, b, f, s, (spec.height, spec.width), spec.tasks)
    persons = PersonBatch(
        boxes=b.numpy(), scores=s.numpy(), frame=f.numpy(), track_id=np.arange(n, dtype=np.int64)
    )
    one = np.zeros(1, np.int64)
    meta = FrameMeta(first_index=0, source_index=one, pts=one, time_s=np.zeros(1), status=("ok",))
    (record,) = frame_records(meta, persons, res)
    encoded = encode_frame(ZarrLayout.from_spec(spec), record)
    arrays = [*encoded.persons.values(), *encoded.maps.values()]
    arrays += [a for per_person in encoded.patches.values() for a in per_person]
    return sum(int(a.nbytes) for a in arrays) + 8 * len(encoded.scalars)


def _rtdetr_weights(path: Path) -> Path:
    """A random RT-DETR R18 saved as the published checkpoints are (``{"ema": {"module":
    state}}``, the reference implementation's parameter names)."""
    from kornia.models.rt_detr.model import RTDETR

    torch.manual_seed(0)
    model = RTDETR.from_name("rtdetr_r18vd", num_classes=80)
    published = {
        k.replace("encoder.ccfm.", "encoder.").replace(".convs.branch2", ".branch2"): v
        for k, v in model.state_dict().items()
    }
    torch.save({"ema": {"module": published, "updates": 1}}, path)
    return path


def detection_cost(video: Path, root: Path, frames: int) -> dict[str, Any]:
    """CPU seconds per 1080p frame of the RT-DETR person detector, built from a local weights
    file through a job's own path (``JobSpec.detection`` -> plan -> ``build_detector``)."""
    import av

    from flows.plan import plan_job
    from flows.spec import JobSpec
    from models.detect import build_detector

    weights = _rtdetr_weights(root / "rtdetr_r18vd_dec3_6x_coco_from_paddle.pth")
    raw = {"source": str(video), "job_id": "detect", "output_root": str(root / "out")}
    raw.update(detector="rtdetr", detection={"weights": str(weights)})
    plan = plan_job(JobSpec.from_dict(raw))
    detector = build_detector("rtdetr", **plan.detector_options)
    with av.open(str(video)) as src:
        stream = src.decode(video=0)
        decoded = [next(stream).to_ndarray(format="rgb24") for _ in range(frames + 1)]
    batch = torch.from_numpy(np.stack(decoded)).permute(0, 3, 1, 2)
    detector(batch[:1], np.zeros(1, np.int64))  # warm-up
    c0, t0 = time.process_time(), time.perf_counter()
    found = detector(batch[1:], np.arange(1, frames + 1))
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    return {
        "model": plan.detector_options["model_name"],
        "input_size": plan.detector_options["input_size"],
        "frames": frames,
        "frame_hw": list(batch.shape[-2:]),
        "cpu_s_per_frame": round(cpu / frames, 4),
        "wall_s_per_frame": round(wall / frames, 4),
        "torch_threads": torch.get_num_threads(),
        "detections": len(found),
    }


# -- the run --------------------------------------------------------------------------------------
def run_pipeline(args: argparse.Namespace, video: Path, root: Path) -> dict[str, Any]:
    """The job on a local Ray cluster with the stand-in; returns the window's report plus the
    whole job's object-store traffic and the store's facts."""
    from flows.plan import plan_job
    from flows.raylocal import ensure_ray, object_store_bytes
    from flows.run import MAX_IN_FLIGHT, run_on_ray
    from flows.spec import JobSpec

    spec = JobSpec.from_dict(
        {
            "source": str(video),
            "job_id": "overhead",
            "output_root": str(root / "out"),
            "tasks": list(TASKS),
            "detector": "boxes",
            "boxes": given_boxes(args.frames, args.persons),
            "batch_size": args.batch_size,
        }
    )
    plan = plan_job(spec)
    # The stand-in gives what the released models' heads give for 1024x768 crops; the store's
    # per-person slots follow the model's crop size.
    model = dataclasses.replace(plan.infer.model, crop_size=INPUT_SIZE)
    plan = dataclasses.replace(plan, infer=dataclasses.replace(plan.infer, model=model))
    ensure_ray(store_bytes=object_store_bytes(plan.batch_bytes(), MAX_IN_FLIGHT + 1))
    sampler = PeakRSS()
    sampler.start()
    window = Window(spec.job_id, args.warmup_frames, sampler)
    before = plasma_created()
    with sapiens_stand_in(args.device_ms_per_person):
        out = run_on_ray(plan, retries=0, progress=window)
    after = plasma_created()
    peak = sampler.stop()
    if out.state != "succeeded":
        raise RuntimeError(f"the job {out.state}: {out.error}")
    report = window.report()
    assert window.end is not None
    store_spec = open_result(out.store_url).spec
    disk = sum(p.stat().st_size for p in Path(out.store_url).rglob("*") if p.is_file())
    report.update(
        job_frames=out.frames,
        plasma={k: after[k] - before[k] for k in after},
        sent_total=window.end.sent,
        peak_rss_mib=round(peak / 2**20, 1),
        stored_bytes_per_frame=stored_bytes_per_frame(
            store_spec, given_boxes(1, args.persons)["0"]
        ),
        store_disk_bytes_per_frame=disk / max(1, out.frames),
        batches=math.ceil(out.frames / args.batch_size),
    )
    return report


CROSSINGS_HOW = (
    "the object store's cumulative counters (objects and bytes ever created) are read before "
    "and after the job; besides the frames only the Sapiens actor's results are large (person "
    "batches, tracker states and the other messages are small enough for Ray to inline in the "
    "calls), so copies of each frame put = (created bytes - result bytes measured in the "
    "Sapiens actor) / (frames x frame bytes): 1 when the decode stage's batch is the only copy, "
    "read in place by the person stage and the Sapiens actor; 2 or more when anything re-puts "
    "pixels"
)


def crossings(run: dict[str, Any], frame_bytes: int) -> dict[str, Any]:
    """How many times each frame entered the object store during the job (``CROSSINGS_HOW``)."""
    p, sent = run["plasma"], run["sent_total"]
    copies = (p["bytes"] - sent["result_bytes"]) / max(1, run["job_frames"] * frame_bytes)
    return {
        "frames_cross_ray_at_most_once": copies < 1.5,
        "frame_copies_put": round(copies, 4),
        "object_store_objects_per_batch": round(p["objects"] / max(1, run["batches"]), 3),
        "object_store_created_bytes_per_frame": round(p["bytes"] / max(1, run["job_frames"])),
        "frames_read_zero_copy_by_sapiens": round(sent["zero_copy_frames"] / sent["frames"], 4),
        "spilled_bytes": p["spilled_bytes"],
        "how": CROSSINGS_HOW,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = _parse(argv)
    root = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    try:
        video = root / "clip-1080p.mp4"
        codec = make_clip(video, args.frames, args.video)
        detection = detection_cost(video, root, args.detection_frames)
        run = run_pipeline(args, video, root)
    finally:
        _leave_ray()
        shutil.rmtree(root, ignore_errors=True)
    result = summary(args, codec, run, detection)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return result


def summary(
    args: argparse.Namespace, codec: str, run: dict[str, Any], detection: dict[str, Any]
) -> dict[str, Any]:
    """The printed JSON object."""
    ceiling = 1000.0 / (args.device_ms_per_person * args.persons)
    frame_bytes = FRAME_HW[0] * FRAME_HW[1] * 3
    source = args.video.name if args.video.is_file() else "synthetic"
    result_bytes, stored = run["result_bytes_per_frame"], run["stored_bytes_per_frame"]
    return {
        "bench": "overhead",
        "video": {
            "upscaled_from": source,
            "hw": list(FRAME_HW),
            "frames": args.frames,
            "codec": codec,
            "fps": FPS,
        },
        "persons_per_frame": args.persons,
        "box_wh": list(BOX_WH),
        "tasks": list(TASKS),
        "batch_size": args.batch_size,
        "device_ms_per_person": args.device_ms_per_person,
        "cpus": os.cpu_count(),
        "warmup_frames": args.warmup_frames,
        "window": {k: run[k] for k in ("frames", "decoded_frames", "sapiens_frames", "seconds")},
        "frames_per_s": round(run["frames_per_s"], 3),
        "ceiling_frames_per_s": round(ceiling, 3),
        "ratio_vs_ceiling": round(run["frames_per_s"] / ceiling, 4),
        "cpu_s_per_frame": run["cpu_s_per_frame"],
        # Part of the sapiens figure: building the stand-in's outputs (what receiving them from
        # a device would cost the host: allocating and writing the maps).
        "sapiens_stand_in_outputs_cpu_s_per_frame": run["stand_in_outputs_cpu_s_per_frame"],
        "cpu_s_per_frame_total": run["cpu_s_per_frame_total"],
        "cpu_cores_busy": run["cpu_cores_busy"],
        "cpu_cores_busy_outside_the_run": run["cpu_cores_busy_outside_the_run"],
        "bytes_per_frame": {
            "results_through_object_store": round(result_bytes),
            "stored_uncompressed": stored,
            "ratio_results_vs_stored": round(result_bytes / stored, 3),
            "store_on_disk": round(run["store_disk_bytes_per_frame"]),
            "decoded_frame_rgb": frame_bytes,
        },
        "frames_crossing": crossings(run, frame_bytes),
        "peak_rss_mib": run["peak_rss_mib"],
        "detection": detection,
    }


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--video", type=Path, default=CLIP, help="clip to upscale to 1080p")
    p.add_argument("--frames", type=int, default=None, help="frames of the clip (default 300)")
    p.add_argument("--device-ms-per-person", type=float, default=DEFAULT_DEVICE_MS)
    p.add_argument("--persons", type=int, default=3, help="given boxes per frame")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--warmup-frames", type=int, help="commits before the window (3 batches)")
    p.add_argument("--detection-frames", type=int, default=None, help="default 4 (quick: 2)")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    p.add_argument("--quick", action="store_true", help="a short run: 64 frames")
    args = p.parse_args(argv)
    args.frames = args.frames or (64 if args.quick else 300)
    args.detection_frames = args.detection_frames or (2 if args.quick else 4)
    if args.warmup_frames is None:
        args.warmup_frames = (2 if args.quick else 3) * args.batch_size
    if args.frames < args.warmup_frames + 2 * args.batch_size or args.persons < 1:
        p.error("need --frames >= --warmup-frames + 2 batches and --persons >= 1")
    return args


def _leave_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


if __name__ == "__main__":
    main()
