"""Many processes, one simulation: ``jax.distributed`` with the device axis spread over every process's chips.

Every process runs the same program on the same host-side plan (configs, data split and topology draws are
seeded, so each process computes them identically); each places its own slice of the device axis on its own
chips, and the collectives between them run over the network (gloo on CPU, ICI/NCCL on accelerators).
Process 0 writes the run's files; every process writes its part of the checkpoints (orbax).

Two ways in:
  * ``jaxdfl run CONFIG --local-processes N`` starts N cooperating processes on this machine
    (:func:`launch_local`), each with its own CPU devices: a test of the multi-host path without a cluster.
  * On a TPU pod slice or a GPU cluster, the same command on every host with ``JAXDFL_DISTRIBUTED=1``
    (``jax.distributed.initialize()`` finds its peers itself; ``tpu/`` has the scripts).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np

COORDINATOR, NUM_PROCESSES, PROCESS_ID = "JAXDFL_COORDINATOR", "JAXDFL_NUM_PROCESSES", "JAXDFL_PROCESS_ID"


def initialize_from_env() -> None:
    """Join the processes the environment names (before anything else touches JAX): the variables
    :func:`launch_local` sets, or ``JAXDFL_DISTRIBUTED=1`` for a cluster JAX detects by itself."""
    import jax

    if os.environ.get(COORDINATOR):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(os.environ[COORDINATOR], int(os.environ[NUM_PROCESSES]),
                                   int(os.environ[PROCESS_ID]))
    elif os.environ.get("JAXDFL_DISTRIBUTED"):
        jax.distributed.initialize()


def is_primary() -> bool:
    """Whether this process writes the run's files (process 0, or the only one)."""
    import jax

    return jax.process_index() == 0


def to_host(x) -> np.ndarray | None:
    """A global array as numpy on every process: gathered when other processes hold parts of it."""
    if x is None:
        return None
    if getattr(x, "is_fully_addressable", True) or x.is_fully_replicated:
        return np.asarray(x)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def sync(name: str) -> None:
    """Wait until every process gets here (a no-op with one process)."""
    import jax

    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def broadcast(value: bool) -> bool:
    """Process 0's ``value`` on every process."""
    import jax

    if jax.process_count() == 1:
        return value
    from jax.experimental import multihost_utils

    return bool(multihost_utils.broadcast_one_to_all(np.bool_(value)))


def launch_local(argv: list[str], n: int) -> int:
    """Run ``jaxdfl <argv>`` as ``n`` cooperating processes on this machine and wait for them; process 0's
    output is shown, the others' only if they fail. If one fails the rest are stopped. Returns the exit code
    (process 0's, or the first failure's). The machine's CPU devices are shared out: each process gets
    ``JAX_NUM_CPU_DEVICES`` (default 1) of its own."""
    with socket.socket() as s:  # a free port for the coordinator
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    base = {**os.environ, "JAX_PLATFORMS": "cpu", COORDINATOR: f"localhost:{port}", NUM_PROCESSES: str(n)}
    base.setdefault("JAX_NUM_CPU_DEVICES", "1")
    procs, logs = [], [None] + [tempfile.TemporaryFile() for _ in range(1, n)]
    for i in range(n):
        quiet = {} if i == 0 else {"stdout": logs[i], "stderr": subprocess.STDOUT}
        procs.append(subprocess.Popen([sys.executable, "-m", "jaxdfl", *argv], env={**base, PROCESS_ID: str(i)},
                                      **quiet))
    code = None
    try:
        while code is None:
            done = [(i, p.poll()) for i, p in enumerate(procs)]
            failed = [(i, c) for i, c in done if c]
            if failed or all(c is not None for _, c in done):
                code = failed[0][1] if failed else 0
                for i, c in failed:
                    if i > 0:
                        logs[i].seek(0)
                        sys.stderr.write(f"jaxdfl: process {i} failed (exit {c}):\n"
                                         f"{logs[i].read().decode(errors='replace')[-4000:]}\n")
            else:
                time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            p.wait()
        for log in logs[1:]:
            log.close()
    return code
