"""The image processor that matches a checkpoint's vision encoder."""

from typing import Any

from transformers import AutoImageProcessor
from transformers.image_processing_utils import BaseImageProcessor
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
from transformers.utils import logging

from .configuration_flmr import FLMRConfig

logger = logging.get_logger(__name__)


def load_image_processor(config: FLMRConfig, name_or_path: str | None = None) -> BaseImageProcessor:
    """The processor named by ``name_or_path`` or the config's ``vision_model_version``.

    When that cannot be loaded (no hub access), CLIP's standard preprocessing at the vision
    encoder's image size is used: every CLIP processor of the published checkpoints resizes the
    shortest edge (bicubic), centre-crops and normalises with the same mean and std.

    Example:
        >>> processor = load_image_processor(model.config)
        >>> pixel_values = processor(images, return_tensors="pt")["pixel_values"]
    """
    name = name_or_path or config.vision_model_version
    try:
        return AutoImageProcessor.from_pretrained(name)
    except OSError:
        if name_or_path is not None:
            raise
        size = config.vision_config.image_size
        logger.warning(
            f"image processor {name!r} is not available here; using CLIP preprocessing at {size}x{size}"
        )
        return CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


def resolve_image_processor(config: FLMRConfig, image_processor: Any = None) -> BaseImageProcessor | None:
    """The processor to use for ``config``: None without a vision encoder, a given processor object as
    it is, else the one named by ``image_processor`` (a name or folder) or by the config.

    Example:
        >>> resolve_image_processor(model.config, "openai/clip-vit-base-patch32")
    """
    if not config.use_vision_encoder:
        return None
    if image_processor is None or isinstance(image_processor, str):
        return load_image_processor(config, image_processor)
    return image_processor
