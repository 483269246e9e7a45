"""``flmr score``: MaxSim scores of queries against documents, without an index."""

import argparse
import sys

import torch

from .exit_codes import EXIT_OK, EXIT_USAGE


def run_score(args: argparse.Namespace) -> int:
    """Encode ``--query`` (with optional ``--image``) and ``--document`` texts and print every score."""
    from PIL import Image

    from flmr import FLMRModelForRetrieval
    from flmr.model.image_processing import load_image_processor

    model = FLMRModelForRetrieval.from_pretrained(args.checkpoint).eval()
    pixel_values = None
    if args.image:
        if len(args.image) != len(args.query):
            print(
                f"error: {len(args.image)} --image for {len(args.query)} --query; give one image per query",
                file=sys.stderr,
            )
            return EXIT_USAGE
        processor = load_image_processor(model.config, args.image_processor)
        images = [Image.open(path).convert("RGB") for path in args.image]
        pixel_values = processor(images, return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        Q = model.query(
            **model.query_tokenizer(args.query), pixel_values=pixel_values
        ).late_interaction_output
        encoded = model.doc(**model.context_tokenizer(args.document, padding="longest"))
        D, mask = encoded.late_interaction_output, encoded.context_mask
        scores = torch.stack([model.score(Q[i : i + 1], D, mask) for i in range(Q.shape[0])])
    _print_score_table(args.query, args.document, scores)
    return EXIT_OK


def _print_score_table(queries: list[str], documents: list[str], scores: torch.Tensor) -> None:
    print("MaxSim scores (rows: queries, columns: documents)")
    for j, document in enumerate(documents):
        print(f"  d{j}: {document[:100]}")
    print("      " + "".join(f"{f'd{j}':>10}" for j in range(len(documents))))
    for i, query in enumerate(queries):
        row = "".join(f"{score:10.3f}" for score in scores[i].tolist())
        best = int(scores[i].argmax())
        print(f"  q{i}: {row}   best d{best}  <- {query[:60]}")
