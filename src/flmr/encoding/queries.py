"""Queries -> late-interaction vectors: text-only, text + image, image-only, or with pre-extracted features.

An image-only query (text None or blank) reads an empty text, as M2KR's image-only tasks do when
they have no instruction; with a checkpoint that masks an instruction (PreFLMR's
``mask_instruction_token`` ":"), the text is that token alone, an empty instruction, so the model
finds where the instruction ends. To reproduce M2KR's image-only tasks exactly, pass their instruction
as the text.
"""

import os
from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from flmr.model.tokenization_flmr import QUERY_MARKER

from .errors import CollectionError
from .images import open_image

ImageInput = str | os.PathLike | Image.Image | None
# How explanations name the query marker [unused0].
QUERY_MARKER_LABEL = "[Q]"


class QueryEncoder:
    r"""Encode batches of queries with an FLMR model.

    Args:
        model: an [`FLMRModelForRetrieval`] with its query tokenizer.
        image_processor: turns PIL images into ``pixel_values`` (needed for queries with images).
        batch_size: queries per forward pass.

    Example:
        >>> encoder = QueryEncoder(model, image_processor)
        >>> Q = encoder.encode(["what is this building?", "who wrote this?"], images=["a.jpg", None])
        >>> Q.shape  # (2, query_maxlen + image vectors, dim); the second query's image vectors are zero
        >>> encoder.encode([None], images=["a.jpg"]).shape  # an image-only query
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
            >>> encoder.query_text(None, has_image=True)  # FLMR; PreFLMR gives ':'
            ''
        """
        if text is not None and text.strip():
            return text
        if not has_image:
            raise CollectionError(f"query {position} has neither text nor an image")
        return self.model.config.mask_instruction_token or ""

    def vector_labels(
        self, text: str | None, num_vectors: int, has_image: bool = False
    ) -> list[tuple[str, str]]:
        """(kind, label) of each of a query's ``num_vectors`` vectors, as [`encode`] lays them out.

        Text positions are named by the query tokenizer's tokens (``[Q]`` for the marker, ``[MASK]`` for
        the expansion tokens); the image vectors follow as ``image i`` (the projected [CLS]) and, for
        PreFLMR, ``image patch j`` (the transformer mapping network's outputs).

        Example:
            >>> encoder.vector_labels("red car", 34, has_image=True)[:4]
            [('text', '[CLS]'), ('text', '[Q]'), ('text', 'red'), ('text', 'car')]
        """
        tokenizer = self.model.query_tokenizer
        ids = tokenizer([self.query_text(text, has_image)])["input_ids"][0]
        labels = [
            ("text", QUERY_MARKER_LABEL if token == QUERY_MARKER else token)
            for token in tokenizer.convert_ids_to_tokens(ids.tolist())
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
