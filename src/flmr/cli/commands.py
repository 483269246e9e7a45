"""``flmr tiny-checkpoint``, ``flmr index``, ``flmr info``, ``flmr search`` and ``flmr serve``."""

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from flmr.extras import require_extra
from flmr.index import Index, verify_index
from flmr.retrieval.retriever import encoding_chunks_folder

from .exit_codes import EXIT_FAILURE, EXIT_OK
from .loading import checkpoint_name, collection_source, index_checkpoint, load_retriever
from .output import folder_size, hit_record, human_size, index_summary, print_hits_table, print_index_summary
from .search_options import search_settings_from_args


def run_tiny_checkpoint(args: argparse.Namespace) -> int:
    """Write a tiny randomly initialised checkpoint folder."""
    from flmr.model.tiny import write_tiny_checkpoint

    output = Path(args.output)
    if output.exists() and not args.overwrite:
        raise FileExistsError(f"{output} already exists: add --overwrite to replace it")
    write_tiny_checkpoint(output, args.style, args.seed)
    print(f"wrote a tiny random {args.style} checkpoint (rankings are meaningless) to {output}")
    return EXIT_OK


def run_index(args: argparse.Namespace) -> int:
    """Encode a collection with a checkpoint and write a compressed index."""
    if Path(args.output).exists() and not args.overwrite:
        raise FileExistsError(f"--output {args.output} already exists: add --overwrite to replace it")
    collection, collection_folder = collection_source(args.collection, args.dataset, args.split)
    image_root = Path(args.image_root).resolve() if args.image_root else collection_folder
    checkpoint = checkpoint_name(args.checkpoint)
    if args.ray:
        from .ray import index_on_ray

        return index_on_ray(args, collection, image_root, checkpoint)
    started = time.perf_counter()
    retriever = load_retriever(checkpoint, args.device, args.batch_size, args.precision)
    try:
        index = retriever.index(
            collection,
            args.output,
            nbits=args.nbits,
            overwrite=args.overwrite,
            image_root=image_root,
            doc_maxlen=args.doc_maxlen,
            show_progress=not args.quiet,
        )
    except BaseException:
        _point_at_resume_state(args.output)
        raise
    print(
        f"indexed {index.num_documents} documents ({index.num_vectors} vectors) into {args.output} "
        f"({human_size(folder_size(index.path))}) in {time.perf_counter() - started:.1f} s"
    )
    return EXIT_OK


def _point_at_resume_state(output: str) -> None:
    chunks = encoding_chunks_folder(output)
    if chunks.is_dir():
        print(
            f"note: the documents encoded so far are kept in {chunks}/: the same command resumes from "
            "them; delete that folder to start over",
            file=sys.stderr,
        )


def run_info(args: argparse.Namespace) -> int:
    """Describe an index: checkpoint, settings, size on disk, document count (or ``--verify`` it)."""
    if Path(args.index).is_file():
        raise ValueError(
            f"{args.index} is a file, not an index: give the folder that `flmr index --output` wrote"
        )
    if args.verify:
        return run_verify(args)
    summary = index_summary(Index.load(args.index))
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print_index_summary(summary)
    return EXIT_OK


def run_verify(args: argparse.Namespace) -> int:
    """Check every file of an index against its recorded checksum; exit 1 when any is damaged."""
    report = verify_index(args.index)
    if args.json:
        print(json.dumps({**asdict(report), "path": str(report.path), "ok": report.ok}, indent=2))
    else:
        for problem in report.problems:
            print(f"damaged: {problem}")
        if report.unchecked:
            print(f"{len(report.unchecked)} files have no recorded checksum (written by an older flmr)")
        print(
            f"{args.index}: {report.files_checked} files match their checksums, {len(report.problems)} problems"
        )
    return EXIT_OK if report.ok else EXIT_FAILURE


def run_search(args: argparse.Namespace) -> int:
    """Answer one question (optionally with an image) from an index."""
    if args.image is not None and not Path(args.image).is_file():
        raise FileNotFoundError(f"image file {args.image!r} does not exist")
    index = Index.load(args.index)
    checkpoint = index_checkpoint(index, args.checkpoint)
    retriever = load_retriever(checkpoint, args.device, precision=args.precision)
    images = [args.image] if args.image is not None else None
    hits = retriever.search(
        [args.question],
        index,
        k=args.k,
        images=images,
        filter=args.filter,
        hybrid_weight=args.hybrid_weight,
        fusion=args.fusion,
        instruction=args.instruction,
        settings=search_settings_from_args(args),
    )[0]
    if args.json:
        record = {
            "index": str(index.path),
            "checkpoint": checkpoint,
            "question": args.question,
            "encoded_text": retriever.query_texts([args.question], images, instruction=args.instruction)[0],
            "image": args.image,
            "k": args.k,
            "search": "exact" if args.exact else "plaid",
            "filter": None if args.filter is None else args.filter.spec,
            "hybrid_weight": args.hybrid_weight,
            "results": [hit_record(hit) for hit in hits],
        }
        print(json.dumps(record, indent=2, ensure_ascii=False))
    else:
        print_hits_table(hits)
    return EXIT_OK


def run_serve(args: argparse.Namespace) -> int:
    """Start the HTTP search service (JSON API and search page) on one index, or on Ray Serve."""
    uvicorn = require_extra("uvicorn", "serve", "`flmr serve`")
    from flmr.serving import SearchEngine, ServiceSettings, create_app  # names the `serve` extra if missing

    settings = ServiceSettings(
        max_k=args.max_k,
        default_k=min(10, args.max_k),
        max_batch_size=args.max_batch_size,
        batch_wait_ms=args.batch_wait_ms,
        image_root=Path(args.image_root).resolve() if args.image_root else None,
        search=search_settings_from_args(args),
    )
    if args.ray:
        from .ray import serve_on_ray

        return serve_on_ray(args, settings)
    index = Index.load(args.index)
    retriever = load_retriever(
        index_checkpoint(index, args.checkpoint), args.device, args.max_batch_size, args.precision
    )
    # Fail here, before the port opens, if the index does not fit the checkpoint.
    SearchEngine(retriever, index, settings).warm_up()
    print(
        f"serving {index.path} ({index.num_documents} documents) at http://{args.host}:{args.port}/ "
        "(API schema at /docs); Ctrl-C stops",
        file=sys.stderr,
    )
    uvicorn.run(
        create_app(retriever, index, settings),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        **settings.server_options(),
    )
    return EXIT_OK
