"""A dropped request's cost counted in instructions: both SDKs at 10% against the logging alone.

bench_logging times the same comparison on the wall clock, where the difference (about 1 %) is
the size of one run's noise. Instructions do not move with the machine's load: each configuration
runs in a worker under valgrind's callgrind, which counts what the worker's main thread executes
during a round (the same page of the example API, every request one the shared decision drops,
the same request IDs on both sides). Figure: instructions per request, lower is better; the goal
(issue 22) is no more than the logging alone.

Needs valgrind (``apt-get install valgrind``); without it the benchmark says so and records
nothing. Under callgrind a request runs about 50 times slower, so rounds are short.
Run with ``make bench``.
"""

from __future__ import annotations

import contextlib
import gc
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import ROOT, Worker, compare, own_database, sized

REQUESTS_PER_ROUND = sized(60, 2)
ROUNDS = 5
WARM_UP_REQUESTS = sized(30, 2)
WORKER_VAR = "SCALEOPS_BENCH_INSTRUCTIONS_WORKER"
OUTPUT_VAR = "SCALEOPS_BENCH_CALLGRIND_OUT"


@contextlib.contextmanager
def _ticking() -> Iterator[None]:
    """Keep a second thread running: callgrind acts on a dump request only while some thread of
    the worker runs Python code, and the main thread waits for callgrind_control meanwhile."""
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(0.01):
            pass

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    try:
        yield
    finally:
        stop.set()
        ticker.join()


def dump_counters(label: str) -> None:
    """Have callgrind write its counters since the last dump (a file per thread) and zero them."""
    with _ticking():
        subprocess.run(
            ["callgrind_control", f"--dump={label}", str(os.getpid())], check=True, capture_output=True, timeout=120
        )


def main_thread_instructions(label: str) -> int:
    """The main thread's instructions in the dump named ``label``.

    Read after the dump, so the reading (several MB of text) counts towards the next interval,
    which no figure uses, not towards the round's.
    """
    output = Path(os.environ[OUTPUT_VAR])
    # One file per dump and thread (--separate-threads): <output>.<dump>-<thread>; 01 is the main one.
    for dump in sorted(output.parent.glob(f"{output.name}.*-01"), key=lambda path: path.stat().st_mtime, reverse=True):
        text = dump.read_text()
        if f"Trigger: dump {label}\n" in text:
            totals = re.search(r"^totals: (\d+)", text, re.MULTILINE)
            if totals:
                return int(totals.group(1))
    raise RuntimeError(f"callgrind wrote no dump named {label!r} in {output.parent}")


def run_worker() -> None:
    """One configuration; answers each count with the instructions per request of a round."""
    from benchmarks.bench_logging import example_application, example_environ, is_dropped, start_response

    results, application, path = example_application()

    def dropped_ids() -> Iterator[str]:
        # The same IDs on both sides (a worker without the APM ignores the decision), chosen
        # before the count starts.
        index = 0
        while True:
            index += 1
            if is_dropped(f"bench-{index}", path):
                yield f"bench-{index}"

    ids = dropped_ids()
    for rounds, line in enumerate(sys.stdin, start=1):
        count = int(line)
        environs = [example_environ(path, next(ids)) for _ in range(count)]
        gc.collect()  # a full collection now, not one that falls in one side's round
        dump_counters(f"round-{rounds}-start")
        for environ in environs:
            body = application(environ, start_response)
            b"".join(body)
            body.close()
        dump_counters(f"round-{rounds}-end")
        print(main_thread_instructions(f"round-{rounds}-end") / count, file=results, flush=True)


class CallgrindWorker(Worker):
    """A worker of this script under callgrind, its dumps in ``folder``."""

    def __init__(self, name: str, folder: Path, env: dict[str, str]) -> None:
        output = folder / f"{name}.callgrind"
        self.proc = subprocess.Popen(
            [
                "valgrind",
                "--tool=callgrind",
                "--cache-sim=no",
                "--dump-instr=no",
                "--separate-threads=yes",
                f"--callgrind-out-file={output}",
                "--log-file=" + str(folder / f"{name}.log"),
                sys.executable,
                str(Path(__file__).resolve()),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            # One hash seed for both: the layout of every dict and set, and so the instructions
            # spent probing them, otherwise differs from one process to the next.
            env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "0", WORKER_VAR: "1", OUTPUT_VAR: str(output)}
            | env,
        )


def bench() -> None:
    from benchmarks.bench_logging import prepare_example, vendor_sink

    prepare_example()
    common = {"DJANGO_DEBUG": "0", "EXAMPLE_SCALEOPS": "1"}
    with vendor_sink() as vendors, tempfile.TemporaryDirectory(prefix="scaleops-callgrind-") as folder:
        # Both start at once (a minute or two each under callgrind); the counts do not care.
        apm = {**common, **vendors, "SCALEOPS_APM_ENABLED": "sentry,datadog"}
        dropped = CallgrindWorker("dropped", Path(folder), apm)
        logging_only = CallgrindWorker("logging", Path(folder), common)
        workers = (dropped, logging_only)
        try:
            for worker in workers:
                worker.round(WARM_UP_REQUESTS)
            compare(
                "A dropped request in instructions (callgrind, the worker's main thread)",
                lambda: dropped.round(REQUESTS_PER_ROUND),
                lambda: logging_only.round(REQUESTS_PER_ROUND),
                rounds=ROUNDS,
                unit="instructions/request",
                higher_is_better=False,
                ours_name="Sentry + Datadog at 10%, a dropped request",
                peer_name="middleware + JSON log, no APM",
                target=1.0,
                key="apm_dropped_vs_logging_instructions",
            )
        finally:
            for worker in workers:
                worker.close()


def main() -> None:
    if os.environ.get(WORKER_VAR):
        run_worker()
        return
    missing = [tool for tool in ("valgrind", "callgrind_control") if shutil.which(tool) is None]
    if missing:
        print(f"skipped: {', '.join(missing)} not found (apt-get install valgrind); nothing recorded")
        return
    bench()


if __name__ == "__main__":
    own_database("apm_instructions")
    main()
