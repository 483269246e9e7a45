"""Turning examples into the model's contrastive inputs: instructions, images, positives, negatives."""

import random
from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from flmr.encoding.images import open_image
from flmr.encoding.queries import query_image, query_text

from .config import INSTRUCTION_MODES
from .data import ContrastiveExample, Passage
from .errors import TrainingConfigError, TrainingDataError

# The 8 fixed instructions the original finetuning script samples from, one per query (the
# duplicate is in the original list and keeps its sampling weights).
PREFLMR_INSTRUCTIONS = (
    "Using the provided image, obtain documents that address the subsequent question: ",
    "Retrieve documents that provide an answer to the question alongside the image: ",
    "Extract documents linked to the question provided in conjunction with the image: ",
    "Utilizing the given image, obtain documents that respond to the following question: ",
    "Using the given image, access documents that provide insights into the following question: ",
    "Obtain documents that correspond to the inquiry alongside the provided image: ",
    "With the provided image, gather documents that offer a solution to the question: ",
    "Utilizing the given image, obtain documents that respond to the following question: ",
)
MAX_NEGATIVE_DRAWS_PER_SLOT = 50


def instruction_for(example: ContrastiveExample, mode: str, rng: random.Random) -> str | None:
    """``sampled``: one of [`PREFLMR_INSTRUCTIONS`]; ``dataset``: the example's own; ``none``: no instruction.

    Raises:
        TrainingConfigError: an unknown ``mode``.
    """
    if mode == "sampled":
        return rng.choice(PREFLMR_INSTRUCTIONS)
    if mode == "dataset":
        return example.instruction
    if mode == "none":
        return None
    raise TrainingConfigError(f"instruction mode must be one of {INSTRUCTION_MODES}, got {mode!r}")


def pick_negatives(
    example: ContrastiveExample, count: int, pool: Sequence[Passage], rng: random.Random
) -> list[Passage]:
    """``count`` negatives: the example's own hard negatives first, then random pool passages.

    Pool passages that are positives of the example, or already chosen, are skipped.

    Example:
        >>> pool = [Passage(str(i), f"text {i}") for i in range(10)]
        >>> example = ContrastiveExample("q", positives=[pool[0]], negatives=[pool[3]])
        >>> [p.id for p in pick_negatives(example, 2, pool, random.Random(0))][0]
        '3'
    """
    chosen = rng.sample(example.negatives, min(count, len(example.negatives)))
    excluded = {p.id for p in example.positives} | {p.id for p in chosen}
    draws = 0
    while len(chosen) < count:
        draws += 1
        if not pool or draws > MAX_NEGATIVE_DRAWS_PER_SLOT * count:
            raise TrainingDataError(
                f"cannot find {count} negatives for example {example.key!r}: the pool of {len(pool)} passages "
                "has too few that are not its positives"
            )
        candidate = pool[rng.randrange(len(pool))]
        if candidate.id not in excluded:
            chosen.append(candidate)
            excluded.add(candidate.id)
    return chosen


class ContrastiveCollator:
    r"""Build ``FLMRModelForRetrieval.forward`` inputs from a list of examples.

    For each query: its text (instruction per ``instruction_mode``, made to end with ":", then the
    question), its image (a black 336x336 image when it has none; only for models with a vision
    encoder), one positive chosen uniformly, and ``num_negative_examples`` negatives; documents are
    laid out ``[pos_1, neg_1_1, ..., pos_2, ...]`` as the model's loss expects.

    Args:
        model: the [`FLMRModelForRetrieval`] (its tokenizers and config are used).
        image_processor: turns query images into pixel values; None for text-only models.
        pool: passages that random negatives are drawn from.
        num_negative_examples: negatives per query.
        instruction_mode: ``"sampled"``, ``"dataset"`` or ``"none"`` (see [`instruction_for`]).
        doc_maxlen: token limit of a passage (documents are padded to the longest of the batch).
        deterministic: draw positives, negatives and instructions from the batch's example keys, so a
            validation batch is the same every time.

    Raises:
        TrainingConfigError: an unknown ``instruction_mode``.

    Example:
        >>> from flmr.training import ContrastiveExample, Passage
        >>> pool = [Passage(d.id, d.text) for d in docs]  # 8 sample documents
        >>> examples = [ContrastiveExample(f"what is {p.id}?", positives=[p]) for p in pool]
        >>> collate = ContrastiveCollator(model, processor, pool, num_negative_examples=2)
        >>> batch = collate(examples[:4])
        >>> batch["query_input_ids"].shape, batch["context_input_ids"].shape[0]  # 4 queries, 4 x (1 + 2) passages
        (torch.Size([4, 32]), 12)
        >>> model(**batch, num_negative_examples=2).loss.shape
        torch.Size([])
    """

    def __init__(
        self,
        model: Any,
        image_processor: Any,
        pool: Sequence[Passage],
        num_negative_examples: int = 4,
        instruction_mode: str = "sampled",
        doc_maxlen: int = 512,
        deterministic: bool = False,
    ):
        if instruction_mode not in INSTRUCTION_MODES:
            raise TrainingConfigError(
                f"instruction mode must be one of {INSTRUCTION_MODES}, got {instruction_mode!r}"
            )
        self.query_tokenizer = model.query_tokenizer
        self.context_tokenizer = model.context_tokenizer
        self.mask_instruction_token = model.config.mask_instruction_token
        self.image_processor = image_processor
        self.pool = pool
        self.num_negative_examples = num_negative_examples
        self.instruction_mode = instruction_mode
        self.doc_maxlen = doc_maxlen
        self.deterministic = deterministic

    def __call__(self, examples: list[ContrastiveExample]) -> dict[str, torch.Tensor]:
        rng = self._rng(examples)
        texts, documents = [], []
        for example in examples:
            texts.append(self.query_text(example, rng))
            documents.append(rng.choice(example.positives).text)
            documents += [p.text for p in pick_negatives(example, self.num_negative_examples, self.pool, rng)]
        queries = self.query_tokenizer(texts)
        contexts = self.context_tokenizer(documents, padding="longest", max_length=self.doc_maxlen)
        batch = {
            "query_input_ids": queries["input_ids"],
            "query_attention_mask": queries["attention_mask"],
            "context_input_ids": contexts["input_ids"],
            "context_attention_mask": contexts["attention_mask"],
        }
        if self.image_processor is not None:
            images = [self.query_image(example) for example in examples]
            batch["query_pixel_values"] = self.image_processor(images, return_tensors="pt")["pixel_values"]
        return batch

    def query_text(self, example: ContrastiveExample, rng: random.Random) -> str:
        """The query's text with its instruction (see [`query_text`])."""
        instruction = instruction_for(example, self.instruction_mode, rng)
        return query_text(instruction, example.question, self.mask_instruction_token)

    @staticmethod
    def query_image(example: ContrastiveExample) -> Image.Image:
        """The query's image as RGB, or the black placeholder the evaluation uses too."""
        image = query_image(example.image_path, None)
        return image if isinstance(image, Image.Image) else open_image(image, f"query {example.key!r}")

    def _rng(self, examples: list[ContrastiveExample]) -> random.Random:
        if self.deterministic:
            return random.Random("\n".join(example.key for example in examples))
        # Drawn from torch's generator: seeded by seed_everything, and differently in each dataloader worker.
        return random.Random(int(torch.randint(0, 2**62, ()).item()))
