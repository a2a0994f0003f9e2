"""Submitting a job to a remote cluster through the Ray Jobs API.

The Ray job's entrypoint is ``sapiens-stream run --registry`` with the whole ``JobSpec``
inline: the job runs on the cluster (its driver joins the cluster, its Sapiens actors take the
cluster's GPUs) and registers itself in the cluster's Redis like any other job, so
``status``/``wait`` against that Redis, ``ray job status``/``ray job logs`` and the dashboard
all see it. The project must be installed on the cluster (deploy/Dockerfile, ray_cluster.yaml).
"""

from __future__ import annotations

import json
import shlex
import time

from flows.errors import SpecError
from flows.spec import JobSpec

__all__ = ["ray_submission_id", "submit_ray_job"]


def ray_submission_id(job_id: str) -> str:
    """The Ray submission id of a job submitted with :func:`submit_ray_job`."""
    return f"sapiens-stream-{job_id}"


def submit_ray_job(
    address: str,
    spec: JobSpec,
    *,
    redis_url: str | None = None,
    actor_gpus: float | None = None,
    retry_s: float = 60.0,
) -> str:
    """Submit ``spec`` to the Ray Jobs API at ``address`` (``http://HEAD:8265``); returns the
    job id.

    Args:
        address: the cluster's dashboard / Jobs API address.
        spec: the job.
        redis_url: Redis the job registers in; default: the cluster's own configuration
            (``SAPIENS_STREAM_REDIS_URL`` on its nodes). A URL given here travels in the Ray
            job's runtime environment, which the dashboard shows: prefer the cluster's.
        actor_gpus: GPUs of the job's Sapiens actor (default: what the cluster has).
        retry_s: how long to retry while the cluster says its job agent is not up yet.

    Raises:
        SpecError: if the cluster refuses the submission (unreachable, duplicate job id).
    """
    from ray.job_submission import JobSubmissionClient

    argv = [
        "sapiens-stream",
        "run",
        "--registry",
        spec.source,
        "--spec-json",
        json.dumps(spec.to_dict(), separators=(",", ":")),
        "--output-root",
        spec.output_root,
        "--quiet",
    ]
    if actor_gpus is not None:
        argv += ["--actor-gpus", str(actor_gpus)]
    env = {"SAPIENS_STREAM_REDIS_URL": redis_url} if redis_url else {}
    deadline = time.monotonic() + retry_s
    while True:
        try:
            client = JobSubmissionClient(address)
            client.submit_job(
                entrypoint=shlex.join(argv),
                submission_id=ray_submission_id(spec.job_id),
                metadata={"sapiens_stream_job": spec.job_id},
                runtime_env={"env_vars": env} if env else None,
            )
            return spec.job_id
        except (ConnectionError, RuntimeError, ValueError) as e:
            # A head that has just started answers before its job agent is up.
            if "try again later" in str(e) and time.monotonic() < deadline:
                time.sleep(1.0)
                continue
            msg = f"the Ray Jobs API at {address} refused job {spec.job_id}: {e}"
            raise SpecError(msg) from e
