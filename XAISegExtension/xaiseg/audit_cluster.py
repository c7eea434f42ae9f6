"""Running an audit's cases on a Dask cluster (``pip install 'xaiseg[audit]'``).

:func:`dask_executor` maps :func:`xaiseg.audit.run_case` - the function that runs a case in this
process - over the cases on the cluster's workers, as many at a time as the cluster has threads,
and yields each case's record as it finishes.  A case whose worker died (Dask's ``KilledWorker``,
or any error getting its result) becomes a failed record and the other cases go on.  The workers
need xaiseg (and whatever the segmenter's factory imports) and see the same files as this process.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, Union

from .audit import Case, Executor, failed_record, run_case
from .errors import InputError, require

#: how often a case may take a worker down before it counts as failed, on a cluster this process starts
ALLOWED_FAILURES = 1


def dask_executor(client, in_flight: Optional[int] = None) -> Executor:
    """An executor for :func:`xaiseg.audit.run_audit` on ``client`` (a ``distributed.Client``)."""

    def execute(cases: List[Case]) -> Iterator[Dict[str, Any]]:
        from distributed import as_completed

        limit = in_flight or max(1, sum(client.nthreads().values()))
        pending = iter(cases)
        running: Dict[str, Case] = {}
        finished = as_completed()

        def submit() -> None:
            case = next(pending, None)
            if case is not None:
                future = client.submit(run_case, case.task(), pure=False, retries=0)
                running[future.key] = case
                finished.add(future)

        for _ in range(limit):
            submit()
        for future in finished:
            case = running.pop(future.key)
            try:
                record = future.result()
            except Exception as exc:  # the worker died (KilledWorker) or the result could not come back
                first = str(exc).split(". ")[0].strip()
                record = dict(failed_record(case, f"the worker running this case died or failed "
                                                  f"({type(exc).__name__}: {first})"), worker_died=True)
            future.release()
            submit()
            yield record

    return execute


@contextmanager
def dask_client(scheduler: Optional[str] = None, local_workers: Optional[int] = None,
                memory_limit: Union[str, int, None] = "auto") -> Iterator[Any]:
    """A ``distributed.Client`` on the cluster at ``scheduler``, or on a LocalCluster of
    ``local_workers`` worker processes (one thread each) that lives as long as the block."""
    require("distributed", "audit", "an audit on a Dask cluster")
    import dask
    from distributed import Client, LocalCluster

    if bool(scheduler) == bool(local_workers):
        raise InputError("give a scheduler address or a number of local workers (not both)")
    if scheduler:
        try:
            client = Client(scheduler, timeout="30s")
        except (OSError, TimeoutError) as exc:
            raise InputError(f"no Dask scheduler answered at {scheduler!r} ({exc}); expected an address such as "
                             "tcp://host:8786") from None
        try:
            yield client
        finally:
            client.close()
        return
    if int(local_workers) < 1:
        raise InputError(f"--local-cluster {local_workers!r} must be a number of worker processes of 1 or more")
    with dask.config.set({"distributed.scheduler.allowed-failures": ALLOWED_FAILURES}):
        cluster = LocalCluster(n_workers=int(local_workers), threads_per_worker=1, processes=True,
                               dashboard_address=None, memory_limit=memory_limit)
    try:
        with Client(cluster) as client:
            yield client
    finally:
        cluster.close()
