"""The pipeline's Prometheus metrics, through ``ray.util.metrics`` (exported by every Ray node).

Every metric is named ``sapiens_stream_<name>`` and created once per process on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["metric"]

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
