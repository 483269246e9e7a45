"""Query construction as the original M2KR evaluation does it: instruction, separator, question, image."""

import os
from collections.abc import Mapping
from typing import Any

from PIL import Image

INSTRUCTION_SEPARATOR = ":"
# The original evaluation feeds a black 336x336 image to queries without one (e.g. MSMARCO).
MISSING_IMAGE_SIZE = 336


def query_text(instruction: str | None, question: str | None, mask_instruction_token: str | None) -> str:
    """The text the query encoder reads: ``"<instruction>: <question>"``.

    The instruction is stripped and made to end with ":"; every ":" in it is then written as the
    checkpoint's ``mask_instruction_token`` (the model masks the tokens up to its first occurrence).
    Without an instruction the question alone is used; image-only tasks have no question.

    Example:
        >>> query_text("Using the image, find documents that answer the question", "Who built it?", ":")
        'Using the image, find documents that answer the question: Who built it?'
    """
    question = (question or "").strip()
    instruction = (instruction or "").strip()
    if not instruction:
        return question
    if not instruction.endswith(INSTRUCTION_SEPARATOR):
        instruction += INSTRUCTION_SEPARATOR
    if mask_instruction_token:
        instruction = instruction.replace(INSTRUCTION_SEPARATOR, mask_instruction_token)
    return f"{instruction} {question}".strip()


def query_image(image_path: str | None, image_root: str | os.PathLike | None) -> str | Image.Image:
    """The query image: ``image_path`` under ``image_root``, or a black 336x336 image when there is none.

    Example:
        >>> query_image(None, "/images").size
        (336, 336)
        >>> query_image("val2014/1.jpg", "/images")
        '/images/val2014/1.jpg'
    """
    if not image_path:
        return Image.new("RGB", (MISSING_IMAGE_SIZE, MISSING_IMAGE_SIZE))
    return os.path.join(image_root, image_path) if image_root is not None else image_path


def row_query_text(row: Mapping[str, Any], mask_instruction_token: str | None) -> str:
    """[`query_text`] of an M2KR query row (its ``instruction`` and ``question`` fields)."""
    return query_text(row.get("instruction"), row.get("question"), mask_instruction_token)
