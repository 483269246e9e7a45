"""Query construction as the original M2KR evaluation does it: instruction, separator, question, image.

The text comes from the builder every surface uses ([`flmr.encoding.queries.query_text`]), with each
M2KR entry's own instruction.
"""

import os
from collections.abc import Mapping
from typing import Any

from PIL import Image

from flmr.encoding.queries import INSTRUCTION_SEPARATOR, query_text

# The original evaluation feeds a black 336x336 image to queries without one (e.g. MSMARCO).
MISSING_IMAGE_SIZE = 336

__all__ = ["INSTRUCTION_SEPARATOR", "MISSING_IMAGE_SIZE", "query_image", "query_text", "row_query_text"]


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
