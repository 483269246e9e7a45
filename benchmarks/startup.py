"""Start-up and offline figures of two checkouts of flmr, measured in one run: `flmr --help`,
`import flmr`, and an image search on a local checkpoint with the hub unreachable (HF_HUB_OFFLINE
unset, HF_ENDPOINT a closed port on 127.0.0.1) against the same search with HF_HUB_OFFLINE=1.

    python benchmarks/startup.py --baseline ../main --candidate . [--repeats 3]

Each figure is the median wall time of fresh processes (the checkout's `src` first on PYTHONPATH, the
interpreter running this script). The tiny checkpoint and the image are written once by the candidate;
each checkout indexes the sample collection with its own code (offline) before its searches. The two
searches run alternately (so that a change of machine load hits both); the baseline's search with the
hub unreachable, which waits on the hub's retries, runs once.
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QUESTION = "What is shown here?"


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def environment(checkout: Path, hub: str) -> dict[str, str]:
    """``hub``: "offline" (HF_HUB_OFFLINE=1) or "unreachable" (unset, endpoint a closed port)."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["PYTHONPATH"] = str(checkout / "src")
    if hub == "offline":
        env["HF_HUB_OFFLINE"] = "1"
    else:
        env["HF_ENDPOINT"] = f"http://127.0.0.1:{closed_port()}"
    return env


def flmr(argv: list[str]) -> list[str]:
    """The `flmr` command with ``argv``, for the checkout on PYTHONPATH."""
    code = f"import sys; from flmr.cli.main import main; sys.exit(main({argv!r}))"
    return [sys.executable, "-c", code]


def run_once(command: list[str], env: dict[str, str]) -> float:
    """Seconds of one run; a failing run stops the benchmark."""
    started = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    return time.perf_counter() - started


def timed(command: list[str], env: dict[str, str], repeats: int) -> float:
    """Median seconds of ``repeats`` runs."""
    return statistics.median(run_once(command, env) for _ in range(repeats))


def prepare(candidate: Path, work: Path) -> tuple[Path, Path]:
    env = environment(candidate, "offline")
    checkpoint, image = work / "checkpoint", work / "red.png"
    subprocess.run(flmr(["tiny-checkpoint", str(checkpoint), "--quiet"]), env=env, check=True)
    make_image = f"from PIL import Image; Image.new('RGB', (64, 48), (200, 30, 30)).save({str(image)!r})"
    subprocess.run([sys.executable, "-c", make_image], env=env, check=True)
    return checkpoint, image


def measure(
    checkout: Path, checkpoint: Path, image: Path, work: Path, repeats: int, unreachable_repeats: int
) -> dict[str, float]:
    offline = environment(checkout, "offline")
    index = work / f"index-{checkout.resolve().name}"
    build = ["index", "--checkpoint", str(checkpoint), "--collection", "sample", "--output", str(index)]
    subprocess.run(flmr([*build, "--overwrite", "--quiet"]), env=offline, check=True)
    search = flmr(["search", str(index), QUESTION, "--image", str(image), "-k", "3"])
    unreachable = environment(checkout, "unreachable")
    offline_seconds, unreachable_seconds = [], []
    for run in range(repeats):
        offline_seconds.append(run_once(search, offline))
        if run < unreachable_repeats:
            unreachable_seconds.append(run_once(search, unreachable))
    return {
        "flmr --help": timed(flmr(["--help"]), offline, repeats),
        "import flmr": timed([sys.executable, "-c", "import flmr"], offline, repeats),
        "image search, HF_HUB_OFFLINE=1": statistics.median(offline_seconds),
        "image search, hub unreachable": statistics.median(unreachable_seconds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--baseline", type=Path, required=True, help="checkout measured as the baseline")
    parser.add_argument("--candidate", type=Path, required=True, help="checkout compared with it")
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure (median)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        checkpoint, image = prepare(args.candidate, work)
        print(f"load average before: {Path('/proc/loadavg').read_text().strip()}")
        baseline = measure(args.baseline, checkpoint, image, work, args.repeats, 1)
        candidate = measure(args.candidate, checkpoint, image, work, args.repeats, args.repeats)
        print(f"load average after: {Path('/proc/loadavg').read_text().strip()}")
    print(f"{'seconds (median)':<34} {'baseline':>9} {'candidate':>10} {'ratio':>7}")
    for name, before in baseline.items():
        after = candidate[name]
        print(f"{name:<34} {before:>9.2f} {after:>10.2f} {before / after:>6.1f}x")
    offline, unreachable = (
        candidate["image search, HF_HUB_OFFLINE=1"],
        candidate["image search, hub unreachable"],
    )
    print(f"candidate: hub unreachable / HF_HUB_OFFLINE=1 = {unreachable / offline:.2f}")


if __name__ == "__main__":
    main()
