"""Queries -> late-interaction vectors, and the one place that builds the text a query encoder reads.

PreFLMR checkpoints (a ``mask_instruction_token``, ":") were trained on ``"<instruction>: <question>"``
texts and mask every token up to the first ":". [`build_query_text`] gives every surface (Python,
CLI, HTTP, evaluation, training) that text: an instruction (by default the one PreFLMR was trained with
for the query's form: image + question, question only, image only; see [`DEFAULT_INSTRUCTIONS`]), the
token, then the question as typed, so a ":" inside the question never masks question words.
Checkpoints without the token (FLMR) read the question alone unless an instruction is given.
"""

import os
from collections.abc import Sequence
from typing import Any, Literal

import torch
from PIL import Image

from flmr.model.tokenization_flmr import QUERY_MARKER, first_token_id

from .errors import CollectionError, InstructionError
from .images import open_image

ImageInput = str | os.PathLike | Image.Image | None
QueryForm = Literal["image_and_question", "question", "image"]
# How explanations name the query marker [unused0].
QUERY_MARKER_LABEL = "[Q]"
INSTRUCTION_SEPARATOR = ":"
# The original M2KR evaluation and training feed a black 336x336 image to queries without one (e.g. MSMARCO).
MISSING_IMAGE_SIZE = 336
# Per query form, an instruction PreFLMR was trained with (M2KR, see the M2KR protocol): the first of
# the 8 fixed image + question instructions, and the first of the image-only (WIT / IGLUE / KVQA)
# ones. M2KR's question-only task (MSMARCO) takes its instructions from the data, not available here:
# its default is the image + question instruction "Retrieve documents that provide an answer to the
# question alongside the image" without the image.
DEFAULT_INSTRUCTIONS: dict[QueryForm, str] = {
    "image_and_question": "Using the provided image, obtain documents that address the subsequent question",
    "question": "Retrieve documents that provide an answer to the question",
    "image": "Identify the document that is connected to this image.",
}


def query_image(image_path: str | None, image_root: str | os.PathLike | None) -> str | Image.Image:
    """An M2KR query's image: ``image_path`` under ``image_root``, or a black 336x336 image when there is none.

    Example:
        >>> query_image(None, "/images").size
        (336, 336)
        >>> query_image("val2014/1.jpg", "/images")
        '/images/val2014/1.jpg'
    """
    if not image_path:
        return Image.new("RGB", (MISSING_IMAGE_SIZE, MISSING_IMAGE_SIZE))
    return os.path.join(image_root, image_path) if image_root is not None else image_path


def query_form(question: str | None, has_image: bool, position: int = 0) -> QueryForm:
    """``"image_and_question"``, ``"question"`` or ``"image"``; ``CollectionError`` when query ``position``
    has neither.

    Example:
        >>> query_form("who built it?", has_image=True), query_form(" ", has_image=True)
        ('image_and_question', 'image')
    """
    has_question = question is not None and bool(question.strip())
    if has_question:
        return "image_and_question" if has_image else "question"
    if not has_image:
        raise CollectionError(
            f"query {position} has neither text nor an image: give a question, an image or both"
        )
    return "image"


def query_text(instruction: str | None, question: str | None, mask_instruction_token: str | None) -> str:
    """The text the query encoder reads: ``"<instruction>: <question>"``, as M2KR builds it.

    The instruction is stripped and made to end with ":"; every ":" in it is then written as the
    checkpoint's ``mask_instruction_token`` (the model masks the tokens up to its first occurrence).
    Without an instruction, a checkpoint with that token reads the token alone before the question
    (an empty instruction, so the question's own ":" masks nothing); one without it, the question.

    Example:
        >>> query_text("Using the image, find documents that answer the question", "Who built it?", ":")
        'Using the image, find documents that answer the question: Who built it?'
        >>> query_text(None, "Dune: who wrote it?", ":")
        ': Dune: who wrote it?'
    """
    question = (question or "").strip()
    instruction = (instruction or "").strip()
    if not instruction:
        return f"{mask_instruction_token} {question}".strip() if mask_instruction_token else question
    if not instruction.endswith(INSTRUCTION_SEPARATOR):
        instruction += INSTRUCTION_SEPARATOR
    if mask_instruction_token:
        instruction = instruction.replace(INSTRUCTION_SEPARATOR, mask_instruction_token)
    return f"{instruction} {question}".strip()


def resolve_instruction(
    question: str | None, has_image: bool, mask_instruction_token: str | None, instruction: str | None = None
) -> str | None:
    """The instruction a query is encoded with: ``instruction``, or the default for its form.

    Checkpoints without a ``mask_instruction_token`` get no default (None). ``""`` asks for no
    instruction. Raises [`InstructionError`] when the instruction holds the token before its end (the
    model would take only what precedes it as the instruction).

    Example:
        >>> resolve_instruction("Dune: who wrote it?", False, ":")
        'Retrieve documents that provide an answer to the question'
    """
    if instruction is None:
        if not mask_instruction_token:
            return None
        return DEFAULT_INSTRUCTIONS[query_form(question, has_image)]
    token = mask_instruction_token
    if token and token in instruction.strip().rstrip(token):
        raise InstructionError(
            f"the instruction {instruction!r} holds {token!r} before its end: the model would read only "
            f"what precedes the first {token!r} as the instruction; remove it or end the instruction there"
        )
    return instruction.strip()


def build_query_text(
    question: str | None,
    has_image: bool,
    mask_instruction_token: str | None,
    instruction: str | None = None,
    position: int = 0,
) -> str:
    """The text a checkpoint reads for a user's query: its instruction (see [`resolve_instruction`]), then
    the question as typed. ``CollectionError`` (naming query ``position``) when it has neither a
    question nor an image.

    Example:
        >>> build_query_text("Ratio 3:2 screens: which brands?", False, ":", instruction="Find reviews")
        'Find reviews: Ratio 3:2 screens: which brands?'
        >>> build_query_text(None, True, None)  # FLMR, an image-only query
        ''
    """
    query_form(question, has_image, position)  # a query needs a question or an image
    return query_text(
        resolve_instruction(question, has_image, mask_instruction_token, instruction),
        question,
        mask_instruction_token,
    )


class QueryEncoder:
    r"""Encode batches of queries with an FLMR model.

    ``encode`` reads each text as given (build it with [`build_query_text`] or [`query_text`]); an
    empty text with an image reads as an empty instruction.

    Args:
        model: an [`FLMRModelForRetrieval`] with its query tokenizer.
        image_processor: turns PIL images into ``pixel_values`` (needed for queries with images).
        batch_size: queries per forward pass.

    Example:
        >>> from PIL import Image
        >>> Image.new("RGB", (64, 48), "red").save("a.jpg")
        >>> encoder = QueryEncoder(model, image_processor)
        >>> Q = encoder.encode(["what is this building?", "who wrote this?"], images=["a.jpg", None])
        >>> Q.shape  # (2, query_maxlen + image vectors, dim)
        torch.Size([2, 36, 16])
        >>> bool(Q[1, 32:].eq(0).all())  # the second query has no image: its image vectors are zero
        True
        >>> encoder.encode([None], images=["a.jpg"]).shape  # an image-only query
        torch.Size([1, 36, 16])
    """

    def __init__(self, model: Any, image_processor: Any = None, batch_size: int = 32):
        self.model = model
        self.image_processor = image_processor
        self.batch_size = batch_size

    def encode(
        self,
        texts: Sequence[str | None],
        images: Sequence[ImageInput] | None = None,
        image_features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(num_queries, length, dim) float32 vectors; queries without an image get zero image vectors.

        A query whose text is None or blank must have an image (or a row of ``image_features``).
        """
        if images is not None and len(images) != len(texts):
            raise CollectionError(
                f"{len(images)} images for {len(texts)} queries: give one image (or None) per query"
            )
        if image_features is not None and image_features.shape[0] != len(texts):
            raise CollectionError(
                f"image_features has {image_features.shape[0]} rows for {len(texts)} queries"
            )
        with_images = images is not None and any(image is not None for image in images)
        texts = [
            self.query_text(
                text, image_features is not None or (images is not None and images[i] is not None), i
            )
            for i, text in enumerate(texts)
        ]
        parts = []
        for start in range(0, len(texts), self.batch_size):
            stop = start + self.batch_size
            parts.append(
                self._encode_batch(
                    list(texts[start:stop]),
                    list(images[start:stop]) if with_images else None,
                    None if image_features is None else image_features[start:stop],
                    start,
                )
            )
        return torch.cat(parts).float().cpu()

    @torch.inference_mode()
    def _encode_batch(
        self,
        texts: list[str],
        images: list[ImageInput] | None,
        image_features: torch.Tensor | None,
        first_position: int,
    ) -> torch.Tensor:
        encoding = self.model.query_tokenizer(texts)
        pixel_values, flags = None, None
        if images is not None:
            pixel_values, flags = self._pixel_values(images, first_position)
        output = self.model.query(
            encoding["input_ids"],
            encoding["attention_mask"],
            pixel_values=pixel_values,
            image_features=image_features,
            concat_output_from_vision_encoder=flags if flags is not None and not all(flags) else None,
        )
        return output.late_interaction_output

    def query_text(self, text: str | None, has_image: bool, position: int = 0) -> str:
        """The text the model reads for a query: ``text``, or for an image-only query the empty instruction.

        Example:
            >>> QueryEncoder(model).query_text(None, has_image=True)  # FLMR; PreFLMR gives ':'
            ''
        """
        if text is not None and text.strip():
            return text
        if not has_image:
            raise CollectionError(f"query {position} has neither text nor an image")
        return query_text(None, None, self.model.config.mask_instruction_token)

    def vector_labels(
        self, text: str | None, num_vectors: int, has_image: bool = False
    ) -> list[tuple[str, str]]:
        """(kind, label) of each of a query's ``num_vectors`` vectors, as [`encode`] lays them out.

        ``text`` is what the model read (see [`encode`]). Text positions are named by the query
        tokenizer's tokens (``[Q]`` for the marker, ``[MASK]`` for the expansion tokens); with a
        ``mask_instruction_token`` the tokens from the marker up to that token are of kind
        ``"instruction"``. The image vectors follow as ``image i`` (the projected [CLS]) and, for
        PreFLMR, ``image patch j`` (the transformer mapping network's outputs).

        Example:
            >>> from flmr.model.tiny import tiny_model
            >>> labels = QueryEncoder(model).vector_labels("red car", 36, has_image=True)
            >>> labels[:4], labels[-1]
            ([('text', '[CLS]'), ('text', '[Q]'), ('text', 'red'), ('text', 'car')], ('image', 'image 4'))
            >>> QueryEncoder(tiny_model("preflmr")).vector_labels("Find: red car", 34)[:5]
            [('text', '[CLS]'), ('text', '[Q]'), ('instruction', 'find'), ('instruction', ':'), ('text', 'red')]
        """
        tokenizer = self.model.query_tokenizer
        tokens = tokenizer.convert_ids_to_tokens(
            tokenizer([self.query_text(text, has_image)])["input_ids"][0].tolist()
        )
        ends_instruction = _instruction_end(tokens, self.model.config.mask_instruction_token, tokenizer)
        labels = [
            (
                "instruction" if 2 <= position <= ends_instruction else "text",
                QUERY_MARKER_LABEL if token == QUERY_MARKER else token,
            )
            for position, token in enumerate(tokens)
        ]
        prefix = int(self.model.config.mapping_network_prefix_length)
        for i in range(num_vectors - len(labels)):
            labels.append(("image", f"image {i + 1}" if i < prefix else f"image patch {i - prefix + 1}"))
        return labels[:num_vectors]

    def _pixel_values(self, images: list[ImageInput], offset: int) -> tuple[torch.Tensor, list[bool]]:
        if self.image_processor is None:
            raise CollectionError("queries with images need an image_processor")
        flags = [image is not None for image in images]
        opened = [self._open(image, offset + i) for i, image in enumerate(images)]
        side = self.model.config.vision_config.image_size
        # A query without an image gets a placeholder whose vectors are then zeroed by its flag.
        opened = [image if image is not None else Image.new("RGB", (side, side)) for image in opened]
        return self.image_processor(opened, return_tensors="pt")["pixel_values"], flags

    @staticmethod
    def _open(image: ImageInput, position: int) -> Image.Image | None:
        if image is None or isinstance(image, Image.Image):
            return image.convert("RGB") if image is not None else None
        return open_image(image, f"query {position}")


def _instruction_end(tokens: list[str], mask_instruction_token: str | None, tokenizer: Any) -> int:
    """Position of the first instruction token among a query's ``tokens`` (-1 when there is none)."""
    if not mask_instruction_token:
        return -1
    marker = tokenizer.convert_ids_to_tokens(first_token_id(tokenizer, mask_instruction_token))
    return tokens.index(marker) if marker in tokens else -1
