"""The image processor that matches a checkpoint's vision encoder, found without the network.

Where [`load_image_processor`] takes it from, in this order:

1. the processor the caller names (a folder, or a hub name: the only case that asks the hub, and a
   hub that cannot be reached fails at once, see `flmr.hub`);
2. the checkpoint folder's own ``preprocessor_config.json``, which [`FLMRModelForRetrieval.save_pretrained`]
   writes;
3. the settings of the published checkpoints' vision encoders, shipped here (``PUBLISHED_IMAGE_SETTINGS``);
4. CLIP's standard preprocessing, with a warning.

Shipped and standard settings always take the vision encoder's own image size (``vision_config.image_size``).
"""

import os
from dataclasses import dataclass, replace
from typing import Any

from transformers import AutoImageProcessor
from transformers.image_processing_utils import BaseImageProcessor
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
from transformers.utils import IMAGE_PROCESSOR_NAME, logging

from flmr.hub import cache_only

from .configuration_flmr import FLMRConfig

logger = logging.get_logger(__name__)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class ImageSettings:
    """CLIP preprocessing: resize the shortest edge to ``size`` pixels (bicubic), centre-crop ``size`` x
    ``size``, scale to [0, 1] and normalise each RGB channel with ``mean`` and ``std``."""

    size: int
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD


# The vision encoders named by the published checkpoints' `vision_model_version`, with the settings of
# their preprocessor_config.json on the hub (size 224, crop 224, OpenAI CLIP mean and std, bicubic).
PUBLISHED_IMAGE_SETTINGS = {
    "openai/clip-vit-base-patch32": ImageSettings(224),  # CLIP ViT-B/32: FLMR, PreFLMR_ViT-B
    "openai/clip-vit-large-patch14": ImageSettings(224),  # CLIP ViT-L/14: PreFLMR_ViT-L
    "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k": ImageSettings(224),  # OpenCLIP ViT-bigG/14: PreFLMR_ViT-G
}


def clip_image_processor(settings: ImageSettings) -> BaseImageProcessor:
    """A CLIP image processor (PIL-based, so no torchvision needed) with these settings."""
    return CLIPImageProcessorPil(
        size={"shortest_edge": settings.size},
        crop_size={"height": settings.size, "width": settings.size},
        image_mean=list(settings.mean),
        image_std=list(settings.std),
    )


def load_image_processor(config: FLMRConfig, name_or_path: str | None = None) -> BaseImageProcessor:
    """The image processor for ``config``'s vision encoder (see the module's docstring for the order).

    Args:
        config: the checkpoint's configuration; ``config.name_or_path`` is the folder it was loaded
            from, if any.
        name_or_path: a processor folder or hub name to use instead.

    Raises:
        OSError: ``name_or_path`` is a folder that does not exist, or a hub name that is neither
            reachable nor in the local hub cache.

    Example:
        >>> from PIL import Image
        >>> processor = load_image_processor(model.config)  # the one saved in the checkpoint's folder
        >>> processor([Image.new("RGB", (64, 48))], return_tensors="pt")["pixel_values"].shape
        torch.Size([1, 3, 32, 32])
    """
    if name_or_path is not None:
        local_only = cache_only(name_or_path, "image processor", IMAGE_PROCESSOR_NAME)
        return AutoImageProcessor.from_pretrained(name_or_path, local_files_only=local_only)
    checkpoint = config.name_or_path
    if checkpoint and os.path.isfile(os.path.join(checkpoint, IMAGE_PROCESSOR_NAME)):
        return AutoImageProcessor.from_pretrained(checkpoint)
    return clip_image_processor(published_image_settings(config))


def published_image_settings(config: FLMRConfig) -> ImageSettings:
    """The shipped settings of ``config.vision_model_version`` at the vision encoder's image size.

    A known encoder name with another image size (a small test model) keeps the name's mean and std;
    an unknown name gets CLIP's standard mean and std, with a warning.
    """
    size = config.vision_config.image_size
    settings = PUBLISHED_IMAGE_SETTINGS.get(config.vision_model_version)
    if settings is None:
        logger.warning(
            f"no image processor settings shipped for vision model {config.vision_model_version!r}: using "
            f"CLIP's standard preprocessing at {size}x{size} pixels; pass image_processor= (or "
            "--image-processor) to use another, or save one into the checkpoint folder"
        )
        return ImageSettings(size)
    return replace(settings, size=size)


def resolve_image_processor(config: FLMRConfig, image_processor: Any = None) -> BaseImageProcessor | None:
    """The processor to use for ``config``: None without a vision encoder, a given processor object as
    it is, else the one named by ``image_processor`` (a name or folder) or [`load_image_processor`]'s.

    Example:
        >>> resolve_image_processor(model.config, processor) is processor
        True
        >>> resolve_image_processor(model.config).crop_size.height
        32
    """
    if not config.use_vision_encoder:
        return None
    if image_processor is None or isinstance(image_processor, str):
        return load_image_processor(config, image_processor)
    return image_processor
