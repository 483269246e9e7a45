"""Checking what clients send: query texts, k, and images (raw bytes or base64) within the limits."""

import base64
import binascii
import io
import re
import warnings

from PIL import Image, UnidentifiedImageError

from .errors import InputError
from .settings import ServiceSettings

ACCEPTED_IMAGE_FORMATS = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "GIF": "image/gif",
    "WEBP": "image/webp",
    "BMP": "image/bmp",
}
_ACCEPTED_FORMATS_TEXT = "JPEG, PNG, GIF, WEBP or BMP"
_DATA_URL_PREFIX = re.compile(r"^data:image/[\w.+-]+;base64,", re.IGNORECASE)


def check_query(
    text: str, k: int | None, settings: ServiceSettings, has_image: bool = False
) -> tuple[str, int]:
    """The stripped query text and k (the default when None), or ``InputError`` (422) naming the limit.

    The text may be empty when the query has an image (an image-only query).

    Example:
        >>> check_query("  capital of France? ", None, ServiceSettings())
        ('capital of France?', 10)
    """
    text = checked_text(text, "the query text", settings)
    if not text and not has_image:
        raise InputError(422, "the query has neither text nor an image")
    k = settings.default_k if k is None else k
    if not 1 <= k <= settings.max_k:
        raise InputError(422, f"k must be between 1 and {settings.max_k}, got {k}")
    return text, k


def checked_text(text: str, what: str, settings: ServiceSettings) -> str:
    """``text`` stripped; ``InputError`` (422) when it is too long or not valid Unicode.

    JSON may carry lone surrogates ("\\ud800") that no tokenizer accepts: they are refused here, so
    they never reach a batch.

    Example:
        >>> checked_text("\\ud800", "the query text", ServiceSettings())
        Traceback (most recent call last):
        ...
        flmr.serving.errors.InputError: the query text is not valid Unicode: it holds the lone surrogate U+D800
    """
    text = text.strip()
    if len(text) > settings.max_query_chars:
        raise InputError(
            422, f"{what} has {len(text)} characters; at most {settings.max_query_chars} are accepted"
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise InputError(
            422,
            f"{what} is not valid Unicode: it holds the lone surrogate U+{ord(error.object[error.start]):04X}",
        ) from None
    return text


def decode_base64_image(data: str, settings: ServiceSettings) -> Image.Image:
    """Decode a base64 image (optionally a ``data:image/...;base64,`` URL) within the limits.

    Example:
        >>> decode_base64_image("bm90IGFuIGltYWdl", ServiceSettings())
        Traceback (most recent call last):
        ...
        flmr.serving.errors.InputError: the image is not a readable JPEG, PNG, GIF, WEBP or BMP file
    """
    data = _DATA_URL_PREFIX.sub("", data.strip(), count=1)
    # base64 takes 4 characters per 3 bytes: refuse oversized payloads before decoding them
    if len(data) > 4 * (settings.max_image_bytes // 3 + 1):
        raise InputError(413, f"the image is larger than {settings.max_image_bytes} bytes")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as error:
        raise InputError(400, f"image_base64 is not valid base64 ({error})") from error
    return decode_image(raw, settings)


def decode_image(raw: bytes, settings: ServiceSettings) -> Image.Image:
    """Decode image bytes to RGB, refusing oversized, unknown or corrupt images with ``InputError``."""
    if len(raw) > settings.max_image_bytes:
        raise InputError(
            413, f"the image has {len(raw)} bytes; at most {settings.max_image_bytes} are accepted"
        )
    if not raw:
        raise InputError(400, "the image is empty")
    too_many_pixels = f"at most {settings.max_image_pixels} pixels are accepted"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            # Only the accepted formats' parsers run; the header alone gives the size before decoding.
            image = Image.open(io.BytesIO(raw), formats=list(ACCEPTED_IMAGE_FORMATS))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(413, f"the image has far too many pixels; {too_many_pixels}") from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise InputError(400, f"the image is not a readable {_ACCEPTED_FORMATS_TEXT} file") from None
    width, height = image.size
    if width * height > settings.max_image_pixels:
        raise InputError(413, f"the image has {width}x{height} pixels; {too_many_pixels}")
    try:
        return reduced(image, settings.decode_side)
    except (OSError, ValueError, SyntaxError) as error:
        raise InputError(400, f"the image data is truncated or corrupt ({error})") from error


def reduced(image: Image.Image, side: int) -> Image.Image:
    """``image`` decoded to RGB with its shorter side between ``side`` and ``2 * side`` pixels (or as is
    when already shorter).

    JPEGs are decoded at 1/2, 1/4 or 1/8 scale by the decoder itself (``draft``), so a large photo
    never takes its full size in memory; other formats are decoded, then reduced by an integer factor
    (box filter). The model's processor then resizes to its own input size.

    Example:
        >>> reduced(Image.new("RGB", (4096, 3072)), 448).size
        (683, 512)
    """
    image.draft("RGB", (side, side))  # JPEG only: the largest scale keeping both sides >= side
    image = image.convert("RGB")
    factor = min(image.size) // side
    return image.reduce(factor) if factor >= 2 else image
