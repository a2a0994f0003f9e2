"""A `serve` process for the fault tests: the real JobService, with a short heartbeat TTL so a
killed service's jobs are reclaimed within seconds. Usage: python -m tests.faults._serve URL ID"""

from __future__ import annotations

import logging
import sys

from flows.service import JobService
from storage import Coordinator, CoordinatorConfig, connect

TTL_S = 3.0


def main(url: str, worker_id: str) -> None:
    logging.basicConfig(level=logging.INFO)
    coord = Coordinator(connect(url).client, CoordinatorConfig(heartbeat_ttl_s=TTL_S))
    JobService(coord, worker_id=worker_id, max_jobs=1, device="cpu").serve()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
