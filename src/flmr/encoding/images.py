"""Loading and preprocessing images of documents and queries."""

import os
from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError

from .collection import Document
from .errors import CollectionError


def open_image(path: str | os.PathLike, owner: str) -> Image.Image:
    """Open an image as RGB; ``owner`` names the document or query in the error message."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError as error:
        raise CollectionError(f"{owner}: image file {os.fspath(path)!r} does not exist") from error
    except (UnidentifiedImageError, OSError) as error:
        raise CollectionError(
            f"{owner}: image file {os.fspath(path)!r} cannot be read as an image ({error})"
        ) from error


def load_pixel_values(documents: Sequence[Document], image_processor: Any) -> torch.Tensor | None:
    """(num_images, 3, H, W) pixel values of every image file of ``documents``, document by document.

    Documents encoded from pre-extracted ``image_features`` contribute no rows (their paths only name
    the images); None when no document has an image file to encode.

    Example:
        >>> from PIL import Image
        >>> for name in ("1.png", "2.png", "3.png"):
        ...     Image.new("RGB", (64, 48)).save(name)
        >>> docs = [Document("a", "", image_paths=["1.png", "2.png"]), Document("b", "text"),
        ...         Document("c", "", image_path="3.png")]
        >>> load_pixel_values(docs, processor).shape  # (images, 3, size, size): the tiny model's 32 pixels
        torch.Size([3, 3, 32, 32])
    """
    images = [
        open_image(path, f"document {d.id!r}")
        for d in documents
        if d.modality == "image_path"
        for path in d.image_paths
    ]
    if not images:
        return None
    return image_processor(images, return_tensors="pt")["pixel_values"]
