"""Query construction as the original M2KR evaluation does it: instruction, separator, question, image.

The text comes from the builder every surface uses ([`flmr.encoding.queries.query_text`]), with each
M2KR entry's own instruction; the image from [`flmr.encoding.queries.query_image`], which training shares.
"""

from collections.abc import Mapping
from typing import Any

from flmr.encoding.queries import INSTRUCTION_SEPARATOR, MISSING_IMAGE_SIZE, query_image, query_text

__all__ = ["INSTRUCTION_SEPARATOR", "MISSING_IMAGE_SIZE", "query_image", "query_text", "row_query_text"]


def row_query_text(row: Mapping[str, Any], mask_instruction_token: str | None) -> str:
    """[`query_text`] of an M2KR query row (its ``instruction`` and ``question`` fields)."""
    return query_text(row.get("instruction"), row.get("question"), mask_instruction_token)
