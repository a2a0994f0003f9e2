"""The pipeline's Prometheus metrics, through ``ray.util.metrics`` (exported by every Ray node).

Every metric is named ``sapiens_stream_<name>`` and created once per process on first use.
Ray's metrics agent exports it to Prometheus as ``ray_sapiens_stream_<name>``, counters with
``_total`` appended (:func:`exported_names`); deploy/grafana/sapiens-stream.json plots them.
"""

from __future__ import annotations

from typing import Any

__all__ = ["METRICS", "exported_names", "metric"]

# name -> (kind, description, tag keys)
METRICS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "frames_decoded": ("counter", "frames decoded and sampled", ("job",)),
    "frames_corrupt": ("counter", "frames or packets dropped as corrupt", ("job",)),
    "frames_committed": ("counter", "frames committed to result stores", ("job",)),
    "actors": ("gauge", "Sapiens actors in the pool", ("model",)),
    "actors_target": ("gauge", "Sapiens actors the backlog asks for", ("model",)),
    "scale_events": ("counter", "pool size changes", ("model", "direction")),
    "actor_busy_fraction": ("gauge", "fraction of time a Sapiens actor runs forwards", ("actor",)),
    "actor_fill": ("gauge", "mean fraction of a forward holding real crops", ("actor",)),
    "jobs": ("gauge", "jobs queued (all services) and running (this service)", ("state",)),
    "jobs_finished": ("counter", "jobs a service ended, by outcome", ("outcome",)),
}

_made: dict[str, Any] = {}


def metric(name: str) -> Any:
    """The counter or gauge ``name`` (one of ``METRICS``)."""
    if name not in _made:
        from ray.util.metrics import Counter, Gauge

        kind, text, tags = METRICS[name]
        cls = Counter if kind == "counter" else Gauge
        _made[name] = cls(f"sapiens_stream_{name}", description=text, tag_keys=tags)
    return _made[name]


def exported_names() -> dict[str, str]:
    """Each metric's name as Ray's Prometheus endpoint exports it (``ray_`` prefix; counters
    end in ``_total``), by its name in ``METRICS``."""
    return {
        name: f"ray_sapiens_stream_{name}" + ("_total" if kind == "counter" else "")
        for name, (kind, _text, _tags) in METRICS.items()
    }
