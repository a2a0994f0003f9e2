"""One job in one process, no Ray: the reference the Ray pipeline is measured and tested against."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from actors.decode import DecodeWorker
from actors.infer import SapiensWorker
from actors.persons import PersonStage
from actors.writer import WriterStage
from flows.plan import JobPlan
from storage import ModelProvenance

__all__ = ["JobOutcome", "model_entries", "run_inline"]


@dataclass(frozen=True, slots=True, kw_only=True)
class JobOutcome:
    """How a job ended."""

    job_id: str
    state: str
    store_url: str
    frames: int
    error: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)


def run_inline(plan: JobPlan) -> JobOutcome:
    """Decode, detect/track, infer and write ``plan``'s job sequentially in this process."""
    t0 = time.perf_counter()
    spec = plan.spec
    decoder = DecodeWorker(plan.decode)
    info = decoder.probe(spec.source)
    persons = PersonStage(plan.detector, plan.detector_options, max_persons=plan.max_persons)
    worker = SapiensWorker(plan.infer)
    facts = worker.model_facts()
    writer = WriterStage(plan.store_request(info, model_entries(facts), trunk=facts.get("trunk")))
    busy = {"decode": 0.0, "persons": 0.0, "infer": 0.0, "write": 0.0}
    index, mark = 0, time.perf_counter()
    for batch in decoder.batches(spec.job_id, spec.source):
        mark = _tick(busy, "decode", mark)
        tracked = persons.tracked(batch)
        mark = _tick(busy, "persons", mark)
        results = worker(batch, tracked, index, plan.out_size(info))
        mark = _tick(busy, "infer", mark)
        writer.add(results)
        mark = _tick(busy, "write", mark)
        index += len(batch)
    frames = writer.finalize(timings=busy)
    busy["total"] = time.perf_counter() - t0
    return JobOutcome(
        job_id=spec.job_id, state="succeeded", store_url=plan.store_url, frames=frames, seconds=busy
    )


def _tick(busy: dict[str, float], stage: str, mark: float) -> float:
    now = time.perf_counter()
    busy[stage] += now - mark
    return now


def model_entries(facts: dict) -> list[ModelProvenance]:
    """One store model entry per checkpointed part."""
    terms = facts.get("licence")
    licence = f"{terms['name']}: {terms['summary']}" if terms else None
    return [
        ModelProvenance(
            name=facts.get("name") or f"{facts.get('family', 'sapiens')}-{facts['size']}",
            task=part,
            checkpoint_sha256=info.get("sha256"),
            random_weights=bool(info.get("random_weights")),
            source=info.get("source"),
            licence=licence,
        )
        for part, info in facts["checkpoints"].items()
    ]
