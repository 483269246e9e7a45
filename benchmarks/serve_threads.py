"""`flmr serve` throughput at 8 and 32 clients: default thread settings against explicit ones.

Indexes the sample collection with a text FLMR around the real MiniLM, then serves it three times
(flmr's default thread policy, ``OMP_NUM_THREADS=1``, ``OMP_NUM_THREADS=2``; or the settings given) and
runs the load test of ``serve_load.py`` against each: requests/second and p50 latency per level, the
load average after each, and best explicit / default per level (the target: default no worse, <= 1.0
up to the noise of a shared machine). Clients and server share the machine's cores.

    python benchmarks/serve_threads.py
    python benchmarks/serve_threads.py --settings default 1 --requests 100
"""

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

from serve_load import (
    flmr_command,
    free_port,
    index_sample,
    minilm_checkpoint,
    run_level,
    sample_questions,
    wait_until_ready,
)

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "FLMR_NUM_THREADS")


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def serve_and_load(
    index: Path, setting: str, questions: list[str], clients: list[int], requests: int, work: Path
) -> dict[int, dict]:
    """Start `flmr serve` with ``setting``, run each client level, stop it; figures per level."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES} | {"HF_HUB_OFFLINE": "1"}
    if setting != "default":
        env["OMP_NUM_THREADS"] = setting
    port = free_port()
    log = work / f"serve-{setting}.log"
    command = flmr_command("serve", str(index), "--port", str(port), "--log-level", "warning")
    with open(log, "wb") as log_file:
        server = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_until_ready(server, base_url, log)
        asyncio.run(run_level(base_url, questions, 4, 40, 60))  # warm-up, not reported
        figures = {}
        for level in clients:
            result = asyncio.run(run_level(base_url, questions, level, requests, 90))
            figures[level] = {
                "rps": result.requests_per_second,
                "p50": result.percentile(0.5),
                "failures": result.failures,
                "load": load_average(),
            }
    finally:
        server.terminate()
        server.wait(timeout=60)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--settings", nargs="+", default=["default", "1", "2"], help="default and OMP values")
    parser.add_argument("--clients", type=int, nargs="+", default=[8, 32], help="concurrency levels")
    parser.add_argument("--requests", type=int, default=200, help="requests per level (default: 200)")
    parser.add_argument("--checkpoint", help="checkpoint folder (default: a text FLMR around MiniLM)")
    args = parser.parse_args()
    questions = sample_questions()
    with tempfile.TemporaryDirectory(prefix="flmr-serve-threads-") as folder:
        work = Path(folder)
        checkpoint = Path(args.checkpoint) if args.checkpoint else minilm_checkpoint(work / "minilm_flmr")
        index = work / "index"
        index_sample(checkpoint, index, {**os.environ, "HF_HUB_OFFLINE": "1"})
        results = {}
        for setting in args.settings:
            results[setting] = serve_and_load(index, setting, questions, args.clients, args.requests, work)
            print(f"{setting}: {results[setting]}", flush=True)
    print(
        f"\nflmr serve, 200-passage sample index, PLAID, k=10, {os.cpu_count()} CPUs "
        f"({platform.processor() or platform.machine()}), clients on the same machine"
    )
    names = {s: "default" if s == "default" else f"OMP {s}" for s in args.settings}
    print(
        f"{'clients':>7}"
        + "".join(f"{names[s] + ' req/s (p50 ms)':>26}" for s in args.settings)
        + f"{'best/default':>14}"
    )
    failed = 0
    for level in args.clients:
        cells = {s: results[s][level] for s in args.settings}
        failed += sum(c["failures"] for c in cells.values())
        row = "".join(f"{c['rps']:>16.1f} ({c['p50']:>6.0f})  " for c in cells.values())
        best = max(c["rps"] for c in cells.values())
        print(f"{level:>7}{row}{best / cells['default']['rps']:>12.2f}x")
    for setting in args.settings:
        print(
            f"load average after each level, {names[setting]}: {[results[setting][c]['load'] for c in args.clients]}"
        )
    print("no request failed" if failed == 0 else f"{failed} requests FAILED")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
