"""``flmr``: command-line entry point.

Examples:
    flmr score --checkpoint LinWeizheDragon/PreFLMR_ViT-B \\
        --query "Using the provided image, obtain documents that address the subsequent question: what is this?" \\
        --image photo.jpg --document "The Eiffel Tower is in Paris." --document "Big Ben is in London."
"""

import argparse
import sys

import torch

EXIT_OK, EXIT_USAGE, EXIT_FAILURE = 0, 2, 1


def _score(args: argparse.Namespace) -> int:
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flmr", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    score = commands.add_parser(
        "score",
        help="encode queries and documents and print their MaxSim scores",
        description="Encode queries (text, optionally one image each) and documents; print every MaxSim score.",
    )
    score.add_argument("--checkpoint", required=True, help="checkpoint folder or hub name")
    score.add_argument("--query", action="append", required=True, help="a query text (repeat for several)")
    score.add_argument(
        "--document", action="append", required=True, help="a document text (repeat for several)"
    )
    score.add_argument("--image", action="append", help="an image file per query (repeat, in query order)")
    score.add_argument("--image-processor", help="image processor name or folder (default: the config's)")
    score.set_defaults(handler=_score)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
