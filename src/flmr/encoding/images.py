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


def load_pixel_values(documents: Sequence[Document], image_processor: Any) -> torch.Tensor:
    """(batch, 3, H, W) pixel values of documents that all have an image path."""
    images = [open_image(d.image_path, f"document {d.id!r}") for d in documents]
    return image_processor(images, return_tensors="pt")["pixel_values"]
