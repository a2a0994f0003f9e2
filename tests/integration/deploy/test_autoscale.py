"""Backlog-driven scaling on a real Ray autoscaler: a fake multinode cluster whose head has no
GPU and whose "gpu" node type (a fake GPU resource, started on demand) hosts the Sapiens actors.

The actors ask for one GPU each (as they would on a real cluster); the model itself runs on the
CPU, since these machines have no GPU. Assertions are on node counts Ray reports."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from flows.pool import ScalePolicy
from flows.service import JobService
from flows.spec import JobSpec
from storage import TERMINAL_STATES, Coordinator, connect, open_result
from tests.integration.deploy.cluster import ray_head

pytestmark = [pytest.mark.ray, pytest.mark.redis]


def _alive_nodes(ray) -> tuple[int, int]:
    """(alive nodes, alive nodes with a GPU)."""
    nodes = [n for n in ray.nodes() if n["Alive"]]
    return len(nodes), sum(1 for n in nodes if n["Resources"].get("GPU", 0) > 0)


def test_a_backlog_adds_a_gpu_node_and_idling_removes_it(shared_clip: Path, tmp_path: Path) -> None:
    import ray

    conn = connect(None, root=tmp_path / "root")
    coord = Coordinator(conn.client)
    with ray_head(tmp_path, fake_autoscaler=True) as address:
        ray.init(address=address, log_to_driver=False)
        try:
            assert _alive_nodes(ray) == (1, 0)  # the head only, no GPU anywhere
            jobs = []
            for i in range(4):
                spec = JobSpec.from_dict(
                    {
                        "source": str(shared_clip),
                        "job_id": f"scale-{i}",
                        "output_root": str(tmp_path / "out"),
                        "sampling": {"stride": 60 + i},
                        "max_side": 96,
                        "batch_size": 4,
                    }
                )
                coord.submit(spec.to_dict(), job_id=spec.job_id)
                jobs.append(spec.job_id)
            policy = ScalePolicy(
                min_actors=0, max_actors=2, idle_s=2.0, target_drain_s=1.0, actor_gpus=1
            )
            service = JobService(
                coord,
                worker_id="scale-serve",
                max_jobs=2,
                device="cpu",
                address=address,
                policy=policy,
                scale_interval_s=0.5,
            )
            stop = threading.Event()
            thread = threading.Thread(
                target=service.serve, kwargs={"until": stop.is_set}, daemon=True
            )
            thread.start()
            seen_gpu_nodes, deadline = 0, time.monotonic() + 240
            while any(coord.get(j).state not in TERMINAL_STATES for j in jobs):
                assert time.monotonic() < deadline, [coord.get(j).state for j in jobs]
                seen_gpu_nodes = max(seen_gpu_nodes, _alive_nodes(ray)[1])
                time.sleep(0.5)
            assert [coord.get(j).state for j in jobs] == ["succeeded"] * 4
            assert seen_gpu_nodes >= 1  # the pending GPU actors made the autoscaler add nodes
            for j in jobs:
                assert open_result(str(tmp_path / "out" / f"{j}.zarr")).num_frames > 0
            ups = [d for d in service.decisions if d["after"] > d["before"]]
            assert ups and ups[0]["before"] == 0 and ups[0]["jobs"] >= 1
            # Idle: the service removes its actors, then the autoscaler removes the node.
            deadline = time.monotonic() + 120
            while _alive_nodes(ray)[1] > 0:
                assert time.monotonic() < deadline, ray.nodes()
                time.sleep(1)
            assert service.pool.sizes() == {}
            downs = [d for d in service.decisions if d["after"] < d["before"]]
            assert downs and downs[-1]["after"] == 0
            assert _alive_nodes(ray) == (1, 0)
            info = coord.workers()["scale-serve"]
            assert info["decisions"]
            stop.set()
            thread.join(timeout=60)
        finally:
            ray.shutdown()
    conn.close()
