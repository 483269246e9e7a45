"""Where each stored vector of a document comes from: one block per image, then the kept text tokens.

The [`DocumentEncoder`] stores a document's vectors in the order the model's ``doc()`` produces them
for one image: image blocks first (``mapping_network_prefix_length`` vectors each, in the order of the
document's images), then the text vectors that survive the token mask (padding and, with
``mask_punctuation``, punctuation are dropped). The index keeps that order, so a layout, stored as the
document's ``vector_layout`` field, maps a vector position back to "image 2" or to a token of the text.

Example:
    >>> from flmr.encoding import Document
    >>> vector_layout(Document("d", "red car", image_paths=["a.jpg", "b.jpg"]), 13, 4, 512)
    [{'kind': 'image', 'vectors': 4, 'source': 'a.jpg'}, {'kind': 'image', 'vectors': 4, 'source': 'b.jpg'}, \
{'kind': 'text', 'vectors': 5, 'max_length': 512}]
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from flmr.model.tokenization_flmr import (
    CONTEXT_MARKER,
    DEFAULT_DOC_MAXLEN,
    MARKER_PLACEHOLDER,
    punctuation_token_ids,
)

from .collection import Document
from .errors import EncodingError

logger = logging.getLogger(__name__)

LAYOUT_FIELD = "vector_layout"
# How the explanation and the search page name the context marker [unused1].
DOCUMENT_MARKER_LABEL = "[D]"


def vector_layout(document: Document, num_vectors: int, image_block: int, doc_maxlen: int) -> list[dict]:
    """The blocks of ``document``'s ``num_vectors`` stored vectors, in order (JSON-ready).

    Each image block has ``image_block`` vectors and names its ``source`` file (None for pre-extracted
    features without a path); the text block holds the rest and records the ``doc_maxlen`` the text
    was truncated to (under the stored key ``max_length``), so that re-tokenising the stored text finds the same tokens.

    Raises:
        EncodingError: ``num_vectors`` is fewer than the document's image blocks take.
    """
    images = document.num_images
    text_vectors = num_vectors - images * image_block
    if text_vectors < 0:
        raise EncodingError(
            f"document {document.id!r} has {num_vectors} vectors, fewer than its {images} images of "
            f"{image_block} vectors each"
        )
    sources = document.image_paths + [None] * (images - len(document.image_paths))
    blocks: list[dict] = [{"kind": "image", "vectors": image_block, "source": source} for source in sources]
    blocks.append({"kind": "text", "vectors": text_vectors, "max_length": doc_maxlen})
    return blocks


@dataclass(frozen=True)
class DocumentToken:
    """What one stored vector of a document stands for.

    ``kind`` is ``"text"``, ``"image"`` or ``"vector"`` (unknown origin); ``label`` is the token
    (``[CLS]``, ``[D]``, ``[SEP]`` or a WordPiece) or ``"image i"``; ``image`` is the 1-based image
    number; ``start``/``end`` are character offsets of a text token in the stored text (None for the
    special tokens).
    """

    position: int
    kind: str
    label: str
    image: int | None = None
    start: int | None = None
    end: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def document_tokens(
    text: str | None,
    layout: Sequence[Mapping[str, Any]] | None,
    num_vectors: int,
    context_tokenizer: Any,
    mask_punctuation: bool = True,
    image_block: int | None = None,
    has_image: bool = False,
) -> list[DocumentToken]:
    """One [`DocumentToken`] per stored vector of a document.

    The text block is named by re-tokenising ``text`` with ``context_tokenizer`` (deterministic) and
    applying the model's document mask. Without a stored ``layout`` (an index written before layouts
    were recorded) the layout is inferred when the vector count fits text only, or one image block of
    ``image_block`` vectors plus text; otherwise, or when the tokens do not fit, vectors are labelled
    ``"vector i"``.

    Example:
        >>> tokens = document_tokens("Red car.", None, 5, model.context_tokenizer)
        >>> [t.label for t in tokens]
        ['[CLS]', '[D]', 'red', 'car', '[SEP]']
    """
    if layout is None:
        layout = _inferred_layout(
            text, num_vectors, context_tokenizer, mask_punctuation, image_block, has_image
        )
    if layout is None or sum(int(block["vectors"]) for block in layout) != num_vectors:
        return _anonymous(0, num_vectors)
    tokens: list[DocumentToken] = []
    image = 0
    for block in layout:
        start, count = len(tokens), int(block["vectors"])
        if block["kind"] == "image":
            image += 1
            tokens += [DocumentToken(start + i, "image", f"image {image}", image=image) for i in range(count)]
            continue
        text_tokens = _text_tokens(
            text or "", int(block.get("max_length", DEFAULT_DOC_MAXLEN)), context_tokenizer, mask_punctuation
        )
        if len(text_tokens) != count:
            logger.warning(
                f"re-tokenising the stored text gives {len(text_tokens)} kept tokens for a text block of {count} "
                "vectors (another tokenizer?); its vectors are labelled by position"
            )
            tokens += _anonymous(start, count)
            continue
        tokens += [
            DocumentToken(start + i, "text", label, start=begin, end=end)
            for i, (label, begin, end) in enumerate(text_tokens)
        ]
    return tokens


def _text_tokens(
    text: str, doc_maxlen: int, context_tokenizer: Any, mask_punctuation: bool
) -> list[tuple[str, int | None, int | None]]:
    """(token, start, end) of the tokens the model keeps, in order, as the encoder tokenised them."""
    encoding = context_tokenizer(
        [text],
        padding="longest",
        truncation="longest_first",
        max_length=doc_maxlen,
        return_offsets_mapping=True,
    )
    ids = encoding["input_ids"][0].tolist()
    offsets = encoding["offset_mapping"][0].tolist()
    skip = {0} | (punctuation_token_ids(context_tokenizer) if mask_punctuation else set())
    names = context_tokenizer.convert_ids_to_tokens(ids)
    shift = len(MARKER_PLACEHOLDER)
    kept = []
    for token_id, name, (begin, end) in zip(ids, names, offsets, strict=True):
        if token_id in skip:
            continue
        if name == CONTEXT_MARKER:
            kept.append((DOCUMENT_MARKER_LABEL, None, None))
        elif end <= begin or begin < shift:  # special tokens, and the placeholder before the text
            kept.append((name, None, None))
        else:
            kept.append((name, begin - shift, end - shift))
    return kept


def _inferred_layout(
    text: str | None,
    num_vectors: int,
    context_tokenizer: Any,
    mask_punctuation: bool,
    image_block: int | None,
    has_image: bool,
) -> list[dict] | None:
    if text is None:
        return None
    kept = len(_text_tokens(text, DEFAULT_DOC_MAXLEN, context_tokenizer, mask_punctuation))
    text_block = {"kind": "text", "vectors": kept, "max_length": DEFAULT_DOC_MAXLEN}
    if num_vectors == kept:
        return [text_block]
    if has_image and image_block and num_vectors == image_block + kept:
        return [{"kind": "image", "vectors": image_block, "source": None}, text_block]
    return None


def _anonymous(start: int, count: int) -> list[DocumentToken]:
    return [DocumentToken(start + i, "vector", f"vector {start + i}") for i in range(count)]
