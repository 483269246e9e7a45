"""Time an M2KR evaluation end to end on a synthetic dataset in the M2KR layout.

Builds ``<work>/data/SYNTH_data`` (test queries: instruction, question, an image for half of them,
one positive passage, answers) and ``<work>/data/SYNTH_passages`` (test_passages) with ``datasets``,
then runs [`evaluate_m2kr`] (index the passages, encode and search the queries, score Recall@K and
Pseudo Recall@K) and prints the time of each stage.

    python benchmarks/evaluate.py                       # 1,000 queries x 10,000 passages, tiny PreFLMR
    python benchmarks/evaluate.py --num-queries 200 --num-passages 2000 --nbits 2
    python benchmarks/evaluate.py --checkpoint path/to/checkpoint --image-processor path/to/processor

Run it again with the same ``--work-dir`` to resume an interrupted run (or see a finished one return at
once). On a machine shared with other jobs, ``--threads 1`` avoids OpenMP threads waiting on each other,
which makes the tiny model's many small matrix products far slower than one thread.
"""

import argparse
import os
import platform
import random
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import datasets  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from flmr.evaluation import EvaluationSettings, evaluate_m2kr  # noqa: E402

TINY_PREFLMR = (
    Path(__file__).resolve().parents[2] / "shared" / "fidelity" / "fixtures" / "public" / "preflmr_tiny"
)
INSTRUCTION = "Using the provided image, obtain documents that address the subsequent question:"
WORDS = [
    "river",
    "bridge",
    "tower",
    "museum",
    "city",
    "mountain",
    "painting",
    "statue",
    "bird",
    "flower",
    "temple",
    "castle",
    "island",
    "lake",
    "forest",
    "desert",
    "volcano",
    "glacier",
    "harbour",
    "library",
    "cathedral",
    "garden",
    "palace",
    "canyon",
    "waterfall",
    "village",
    "market",
]


def build_dataset(root: Path, num_queries: int, num_passages: int, seed: int = 0) -> None:
    """A synthetic task ``SYNTH`` in the local save_to_disk layout, with a few query images."""
    rng = random.Random(seed)
    image_dir = root / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    for i in range(8):
        Image.new("RGB", (64, 48), color=(30 * i, 200 - 20 * i, 90)).save(image_dir / f"{i}.jpg")
    passages = [
        {
            "passage_id": f"p{i}",
            "passage_content": " ".join(rng.choices(WORDS, k=rng.randint(30, 120))) + f" code{i}",
        }
        for i in range(num_passages)
    ]
    queries = []
    for i in range(num_queries):
        target = rng.randrange(num_passages)
        queries.append(
            {
                "question_id": f"q{i}",
                "question": "what is the " + " ".join(rng.choices(WORDS, k=6)) + "?",
                "instruction": INSTRUCTION,
                "img_path": f"{i % 8}.jpg" if i % 2 == 0 else None,
                "pos_item_ids": [f"p{target}"],
                "answers": [f"code{target}"],
            }
        )
    datasets.DatasetDict({"test": datasets.Dataset.from_list(queries)}).save_to_disk(str(root / "SYNTH_data"))
    datasets.DatasetDict({"test_passages": datasets.Dataset.from_list(passages)}).save_to_disk(
        str(root / "SYNTH_passages")
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", default=str(TINY_PREFLMR))
    parser.add_argument("--image-processor", help="default: the checkpoint's (CLIP preprocessing offline)")
    parser.add_argument("--num-queries", type=int, default=1000)
    parser.add_argument("--num-passages", type=int, default=10_000)
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 5, 10, 20, 50, 100, 500])
    parser.add_argument("--nbits", type=int, default=8)
    parser.add_argument("--query-batch-size", type=int, default=32)
    parser.add_argument("--indexing-batch-size", type=int, default=64)
    parser.add_argument("--exact", action="store_true", help="exact MaxSim instead of PLAID")
    parser.add_argument(
        "--work-dir", help="keep the dataset, index and rankings here (default: a temp folder)"
    )
    parser.add_argument(
        "--threads", type=int, help="torch threads (1 is much faster for tiny models on a busy machine)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="flmr_eval_bench_"))
    data_root = work / "data"
    if not (data_root / "SYNTH_data").is_dir():
        build_dataset(data_root, args.num_queries, args.num_passages)
    settings = EvaluationSettings(
        ks=args.ks,
        pseudo_recall=True,
        nbits=args.nbits,
        query_batch_size=args.query_batch_size,
        indexing_batch_size=args.indexing_batch_size,
        exact=args.exact,
        index_root=work / "indexes",
    )
    started = time.perf_counter()
    (result,) = evaluate_m2kr(
        args.checkpoint,
        data_root,
        ["SYNTH"],
        work / "runs" / ("exact" if args.exact else "plaid"),
        settings=settings,
        image_root=data_root / "images",
        image_processor=args.image_processor,
        show_progress=False,
    )
    total = time.perf_counter() - started
    print(
        f"machine: {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}, "
        f"checkpoint {Path(args.checkpoint).name}"
    )
    print(
        f"{result.num_queries} queries x {result.num_passages} passages, K up to {max(args.ks)}, nbits {args.nbits}"
    )
    print(f"index: {result.seconds['index']:.1f} s, encode+search: {result.seconds['search']:.1f} s")
    print(f"total evaluation time: {total:.1f} s (model loading and scoring included)")
    print("metrics: " + ", ".join(f"{name} {value:.3f}" for name, value in result.metrics.items()))
    print(f"rankings: {result.rankings_path}")


if __name__ == "__main__":
    main()
