"""FLMR and PreFLMR: fine-grained late-interaction multi-modal retrievers.

A query (instruction + question, and optionally an image) and a document (text, optionally an
image) are each encoded into a set of ``dim``-sized vectors; relevance is late interaction
(MaxSim): for every query vector the best-matching document vector, summed.
"""

import os
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from transformers import AutoConfig, AutoModel, BertConfig, BertModel, CLIPVisionModel, PreTrainedModel
from transformers.models.bert.modeling_bert import BertEncoder
from transformers.utils import CONFIG_NAME, ModelOutput, cached_file, logging

from flmr.hub import cache_only
from flmr.runtime import sized_threads

from .checkpoint_layout import to_model_layout, to_published_layout
from .configuration_flmr import BERT_BASE_NAMES, FLMRConfig, FLMRTextConfig, FLMRVisionConfig
from .errors import MissingTokenizerError, ModelInputError
from .image_processing import load_image_processor
from .tokenization_flmr import (
    FLMRContextEncoderTokenizer,
    FLMRQueryEncoderTokenizer,
    first_token_id,
    punctuation_token_ids,
)

logger = logging.get_logger(__name__)

QUERY_TOKENIZER_FOLDER = "query_tokenizer"
CONTEXT_TOKENIZER_FOLDER = "context_tokenizer"
MASKED_DOCUMENT_SCORE = -9999.0
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")
HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "proxies", "subfolder")


# ------------------------------------------------------------------------------------------------
# outputs
# ------------------------------------------------------------------------------------------------
@dataclass
class FLMRQueryEncoderOutput(ModelOutput):
    """Output of [`FLMRModelForRetrieval.query`].

    Args:
        pooler_output: (batch, dim) the first query vector before normalisation.
        late_interaction_output: (batch, query_length, dim) L2-normalised query vectors: text vectors
            (masked ones are zero) followed by image vectors.
        text_encoder_hidden_states / vision_encoder_hidden_states /
        transformer_mapping_network_hidden_states: per-layer hidden states when
            ``output_hidden_states`` is set.
    """

    pooler_output: torch.FloatTensor | None = None
    late_interaction_output: torch.FloatTensor | None = None
    text_encoder_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    vision_encoder_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    transformer_mapping_network_hidden_states: torch.FloatTensor | None = None


@dataclass
class FLMRContextEncoderOutput(ModelOutput):
    """Output of [`FLMRModelForRetrieval.doc`].

    Args:
        pooler_output: (batch, dim) the first normalised document vector.
        late_interaction_output: (batch, doc_length, dim) normalised document vectors (image vectors
            first), or with ``keep_dims=False`` a list of (n_kept_i, dim) tensors, one per document.
        context_mask: (batch, doc_length, 1) boolean, true on the vectors that count in MaxSim.
        text_encoder_hidden_states / vision_encoder_hidden_states: when ``output_hidden_states`` is set.
    """

    pooler_output: torch.FloatTensor | None = None
    late_interaction_output: torch.FloatTensor | list[torch.FloatTensor] | None = None
    context_mask: torch.BoolTensor | None = None
    text_encoder_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    vision_encoder_hidden_states: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class FLMRModelForRetrievalOutput(ModelOutput):
    """Output of [`FLMRModelForRetrieval.forward`].

    Args:
        loss: the training loss (the in-batch loss when in-batch negatives are used).
        scores: (batch, 1 + num_negative_examples) scores of each query against its own documents.
        in_batch_negative_loss: cross-entropy against every document of the batch, or None.
        query_late_interaction_output: (batch, query_length, dim).
        context_late_interaction_output: (batch * (1 + num_negative_examples), doc_length, dim).
    """

    loss: torch.FloatTensor | None = None
    scores: torch.FloatTensor | None = None
    in_batch_negative_loss: torch.FloatTensor | None = None
    query_late_interaction_output: torch.FloatTensor | None = None
    context_late_interaction_output: torch.FloatTensor | None = None


# ------------------------------------------------------------------------------------------------
# building blocks
# ------------------------------------------------------------------------------------------------
class FLMRPreTrainedModel(PreTrainedModel):
    """Base class: weight initialisation and the transformers loading machinery."""

    config: FLMRConfig
    base_model_prefix = "flmr"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_attention_backend = True


def _bert_config_from(text_config: FLMRTextConfig, **overrides: Any) -> BertConfig:
    bert_fields = {f.name for f in fields(BertConfig)} & {f.name for f in fields(FLMRTextConfig)}
    values = {name: getattr(text_config, name) for name in bert_fields}
    values.update(overrides)
    bert_config = BertConfig(**values)
    bert_config._attn_implementation = text_config._attn_implementation
    return bert_config


def _build_text_backbone(config: FLMRTextConfig) -> PreTrainedModel:
    if config.uses_bert:
        return BertModel(_bert_config_from(config), add_pooling_layer=True)
    if config.text_encoder_config is None:
        # Record the architecture so that a saved checkpoint rebuilds it without any lookup.
        config.text_encoder_config = AutoConfig.from_pretrained(config.text_encoder_base_model).to_dict()
    backbone_config = AutoConfig.for_model(**config.text_encoder_config)
    return AutoModel.from_config(backbone_config)


class FLMRTextModel(FLMRPreTrainedModel):
    """Text encoder: BERT (or, with ``text_encoder_base_model``, any AutoModel text encoder).

    Example:
        >>> model = FLMRTextModel(FLMRTextConfig(hidden_size=24, num_hidden_layers=2, num_attention_heads=4))
        >>> out = model(input_ids=torch.tensor([[101, 2054, 102]]))
        >>> out.last_hidden_state.shape
        torch.Size([1, 3, 24])
    """

    config: FLMRTextConfig
    base_model_prefix = "flmr_text_model"

    def __init__(self, config: FLMRTextConfig):
        super().__init__(config)
        self.text_model = _build_text_backbone(config)
        self.post_init()

    @property
    def bert_model(self) -> PreTrainedModel:
        """The original implementation's name of the text encoder."""
        return self.text_model

    @property
    def hidden_size(self) -> int:
        return self.text_model.config.hidden_size

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        output_hidden_states: bool = False,
    ) -> ModelOutput:
        """Encode (batch, length) token ids; returns the backbone's output (``last_hidden_state`` first)."""
        kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        return self.text_model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            output_hidden_states=output_hidden_states,
            **kwargs,
        )


class FLMRVisionModel(FLMRPreTrainedModel):
    """Vision encoder: a CLIP vision transformer (keys ``vision_model.vision_model.*``).

    Example:
        >>> config = FLMRVisionConfig(hidden_size=24, num_hidden_layers=2, num_attention_heads=2,
        ...                           intermediate_size=48, image_size=32, patch_size=8)
        >>> FLMRVisionModel(config)(torch.zeros(1, 3, 32, 32)).last_hidden_state.shape
        torch.Size([1, 17, 24])
    """

    config: FLMRVisionConfig
    base_model_prefix = "flmr_vision_model"
    main_input_name = "pixel_values"

    def __init__(self, config: FLMRVisionConfig):
        super().__init__(config)
        self.vision_model = CLIPVisionModel(config)
        self.post_init()

    def forward(self, pixel_values: torch.FloatTensor, output_hidden_states: bool = False) -> ModelOutput:
        """Encode (batch, channels, height, width) images; ``last_hidden_state`` is before the post-layernorm."""
        return self.vision_model(pixel_values=pixel_values, output_hidden_states=output_hidden_states)


class FLMRMultiLayerPerceptron(nn.Module):
    """Linear layers with Tanh between them (keys ``model.0.*``, ``model.2.*``)."""

    def __init__(self, sizes: tuple[int, ...], bias: bool = True):
        super().__init__()
        layers: list[nn.Module] = []
        for index, (size_in, size_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            layers.append(nn.Linear(size_in, size_out, bias=bias))
            if index < len(sizes) - 2:
                layers.append(nn.Tanh())
        self.model = nn.Sequential(*layers)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.model(hidden_states)


def _mapping_network_config(config: FLMRConfig) -> BertConfig:
    base = config.transformer_mapping_config_base
    overrides = {
        "num_hidden_layers": config.transformer_mapping_num_hidden_layers,
        "is_decoder": True,
        "add_cross_attention": True,
    }
    if base is None or base in BERT_BASE_NAMES:
        # The published checkpoints name "bert-base-uncased", whose settings are the text encoder's own.
        mapping_config = _bert_config_from(config.text_config, **overrides)
    else:
        mapping_config = BertConfig.from_pretrained(base, **overrides)
    if mapping_config.num_hidden_layers is None:
        raise ModelInputError(
            "use_transformer_mapping_network needs transformer_mapping_num_hidden_layers in the config"
        )
    return mapping_config


# ------------------------------------------------------------------------------------------------
# the retriever
# ------------------------------------------------------------------------------------------------
def _transformer_flops_per_token(config: Any) -> float:
    """Multiply-adds x 2 of one token through a BERT/CLIP-style encoder (its linear layers)."""
    hidden, layers = config.hidden_size, config.num_hidden_layers
    return 2.0 * layers * (4 * hidden * hidden + 2 * hidden * config.intermediate_size)


def encoding_work(
    self: "FLMRModelForRetrieval",
    input_ids: torch.Tensor,
    pixel_values: torch.Tensor | None = None,
    **_: Any,
) -> float:
    """FLOP of a ``query()`` / ``doc()`` call of ``self`` (the model) on (batch, length) ``input_ids`` and
    (images, 3, H, W) ``pixel_values``: the linear layers of the text and vision encoders. It sizes the CPU
    threads the call runs with (see [`flmr.runtime`])."""
    work = input_ids.numel() * _transformer_flops_per_token(self.config.text_config)
    if pixel_values is not None and self.config.use_vision_encoder:
        vision = self.config.vision_config
        tokens = (vision.image_size // vision.patch_size) ** 2 + 1
        images = pixel_values.numel() // (3 * pixel_values.shape[-1] * pixel_values.shape[-2])
        work += images * tokens * _transformer_flops_per_token(vision)
    return work


def _per_example_flags(flag: bool | list[bool], batch_size: int, name: str) -> torch.Tensor | None:
    """None for a plain boolean, else a (batch, 1, 1) float tensor of the per-example flags."""
    if isinstance(flag, bool):
        return None
    flags = torch.as_tensor(list(flag), dtype=torch.float32)
    if flags.numel() != batch_size:
        raise ModelInputError(f"{name} has {flags.numel()} per-example flags for a batch of {batch_size}")
    return flags.view(-1, 1, 1)


class FLMRModelForRetrieval(FLMRPreTrainedModel):
    r"""The FLMR / PreFLMR retriever: encodes queries and documents, scores them by late interaction.

    When ``separate_query_and_context_*`` is false (all published checkpoints), queries and documents
    share one module: ``query_text_encoder`` is ``context_text_encoder`` and so on.

    Example (``"my_checkpoint"`` is a tiny one, 32x32-pixel images; a published one is loaded by its
    hub name, e.g. ``"LinWeizheDragon/PreFLMR_ViT-L"``):
        >>> model = FLMRModelForRetrieval.from_pretrained("my_checkpoint")
        >>> q = model.query_tokenizer(["Question: what is this building?"])
        >>> Q = model.query(**q, pixel_values=torch.zeros(1, 3, 32, 32)).late_interaction_output
        >>> Q.shape  # (batch, query_maxlen + image vectors, dim)
        torch.Size([1, 36, 16])
        >>> d = model.context_tokenizer(["The Eiffel Tower is in Paris."], max_length=16)
        >>> out = model.doc(**d)
        >>> model.score(Q, out.late_interaction_output, out.context_mask).shape
        torch.Size([1])
    """

    _SHARED_QUERY_MODULES = {
        "query_text_encoder": ("context_text_encoder", "separate_query_and_context_text_encoder"),
        "query_text_encoder_linear": (
            "context_text_encoder_linear",
            "separate_query_and_context_text_encoder",
        ),
        "query_vision_encoder": ("context_vision_encoder", "separate_query_and_context_vision_encoder"),
        "query_vision_projection": ("context_vision_projection", "separate_query_and_context_vision_encoder"),
    }

    def __init__(
        self,
        config: FLMRConfig,
        query_tokenizer: FLMRQueryEncoderTokenizer | None = None,
        context_tokenizer: FLMRContextEncoderTokenizer | None = None,
    ):
        super().__init__(config)
        self.context_text_encoder = FLMRTextModel(config.text_config)
        text_hidden = self.context_text_encoder.hidden_size
        self.context_text_encoder_linear = nn.Linear(text_hidden, config.dim, bias=False)
        if config.separate_query_and_context_text_encoder:
            self.query_text_encoder = FLMRTextModel(config.text_config)
            self.query_text_encoder_linear = nn.Linear(text_hidden, config.dim, bias=False)
        if config.use_vision_encoder:
            self._build_vision_modules(config)
        if config.use_transformer_mapping_network:
            mapping_config = _mapping_network_config(config)
            self.transformer_mapping_input_linear = nn.Linear(
                config.vision_config.hidden_size, mapping_config.hidden_size
            )
            self.transformer_mapping_network = BertEncoder(mapping_config)
            self.transformer_mapping_output_linear = nn.Linear(mapping_config.hidden_size, config.dim)
        self.query_tokenizer = query_tokenizer
        self.context_tokenizer = context_tokenizer
        self.post_init()

    def _build_vision_modules(self, config: FLMRConfig) -> None:
        vision_hidden = config.vision_config.hidden_size
        projection_sizes = (
            vision_hidden,
            config.dim * config.mapping_network_prefix_length // 2,
            config.dim * config.mapping_network_prefix_length,
        )
        self.context_vision_encoder = FLMRVisionModel(config.vision_config)
        self.context_vision_projection = FLMRMultiLayerPerceptron(projection_sizes)
        if config.separate_query_and_context_vision_encoder:
            self.query_vision_encoder = FLMRVisionModel(config.vision_config)
            self.query_vision_projection = FLMRMultiLayerPerceptron(projection_sizes)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            shared = FLMRModelForRetrieval._SHARED_QUERY_MODULES.get(name)
            if shared is None or getattr(self.config, shared[1]):
                raise
            return super().__getattr__(shared[0])

    # -------------------------------------------------------------------------------------------
    # token masks
    # -------------------------------------------------------------------------------------------
    def _require_tokenizer(self, name: str) -> Any:
        tokenizer = getattr(self, name)
        if tokenizer is None:
            cls = FLMRQueryEncoderTokenizer if name == "query_tokenizer" else FLMRContextEncoderTokenizer
            raise ModelInputError(
                f"this FLMRModelForRetrieval has no {name}, which it needs to build its token masks: pass "
                f"{name}={cls.__name__}.from_pretrained(<checkpoint>, subfolder='{name}') to from_pretrained "
                "or to the constructor"
            )
        return tokenizer

    def _document_token_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        keep = input_ids != 0
        if self.config.mask_punctuation:
            punctuation = punctuation_token_ids(self._require_tokenizer("context_tokenizer"))
            keep &= ~torch.isin(input_ids, torch.tensor(sorted(punctuation), device=input_ids.device))
        return keep

    def _query_token_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        skip = torch.tensor(
            self.config.query_mask_input_ids_skip_list, dtype=torch.long, device=input_ids.device
        )
        keep = (input_ids != 0) & ~torch.isin(input_ids, skip)
        if not self.config.mask_instruction_token:
            return keep
        instruction_id = first_token_id(
            self._require_tokenizer("query_tokenizer"), self.config.mask_instruction_token
        )
        is_instruction = input_ids == instruction_id
        found = is_instruction.any(dim=1)
        if not bool(found.all()):
            logger.error(
                f"{int((~found).sum())} queries have no instruction token {self.config.mask_instruction_token!r}; "
                "only their [CLS] and [Q] tokens are masked as instruction"
            )
        # argmax gives the first occurrence; rows without one fall back to position 1.
        instruction_position = torch.where(
            found, is_instruction.int().argmax(dim=1), torch.ones_like(found, dtype=torch.long)
        )
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        return keep & ((positions < 2) | (positions > instruction_position.unsqueeze(1)))

    # -------------------------------------------------------------------------------------------
    # images
    # -------------------------------------------------------------------------------------------
    def _check_images(
        self,
        batch_size: int,
        pixel_values: torch.Tensor | None,
        image_features: torch.Tensor | None,
        side: str,
    ) -> None:
        if pixel_values is not None and image_features is not None:
            raise ModelInputError(f"{side}: pass either pixel_values or image_features, not both")
        if not self.config.use_vision_encoder:
            raise ModelInputError(
                f"{side}: this model has no vision encoder (use_vision_encoder=False); pass text only"
            )
        images = pixel_values if pixel_values is not None else image_features
        if images.shape[0] != batch_size:
            kind = "pixel_values" if pixel_values is not None else "image_features"
            raise ModelInputError(
                f"{side}: {kind} has {images.shape[0]} images for {batch_size} texts; pass one image per text "
                "(pixel_values of shape (batch, 3, H, W), or (batch, regions, 3, H, W) for several regions each)"
            )
        if pixel_values is not None and pixel_values.dim() not in (4, 5):
            raise ModelInputError(
                f"{side}: pixel_values must be 4-D or 5-D, got shape {tuple(pixel_values.shape)}"
            )

    def _image_cls_features(
        self,
        encoder: FLMRVisionModel,
        pixel_values: torch.Tensor | None,
        image_features: torch.Tensor | None,
        need_hidden: bool,
    ) -> tuple[torch.Tensor, ModelOutput | None]:
        if image_features is not None:
            return image_features.to(device=self.device, dtype=self.dtype), None
        flat = pixel_values.reshape(-1, *pixel_values.shape[-3:]).to(device=self.device, dtype=self.dtype)
        outputs = encoder(flat, output_hidden_states=need_hidden)
        return outputs.last_hidden_state[:, 0], outputs

    def _project_images(self, projection: nn.Module, features: torch.Tensor, batch_size: int) -> torch.Tensor:
        return projection(features).view(batch_size, -1, self.config.dim)

    def _mapping_network_vectors(
        self, vision_outputs: ModelOutput, text_hidden: torch.Tensor, input_ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        patch_states = vision_outputs.hidden_states[-2][:, 1:]
        mapping_input = self.transformer_mapping_input_linear(patch_states)
        length = self.config.transformer_mapping_cross_attention_length
        text_hidden, ids = text_hidden[:, :length], input_ids[:, :length]
        skip = torch.tensor(self.config.query_mask_input_ids_skip_list, dtype=torch.long, device=ids.device)
        cross_mask = (~torch.isin(ids, skip)).to(text_hidden.dtype)
        # additive mask as transformers' invert_attention_mask builds it: (batch, 1, 1, keys)
        cross_mask = (1.0 - cross_mask[:, None, None, :]) * torch.finfo(text_hidden.dtype).min
        mapped = self.transformer_mapping_network(
            mapping_input,
            encoder_hidden_states=text_hidden,
            encoder_attention_mask=cross_mask,
            is_causal=False,
        ).last_hidden_state
        return self.transformer_mapping_output_linear(mapped), mapped

    # -------------------------------------------------------------------------------------------
    # encoders
    # -------------------------------------------------------------------------------------------
    @sized_threads(encoding_work)
    def query(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.FloatTensor | None = None,
        image_features: torch.FloatTensor | None = None,
        concat_output_from_vision_encoder: bool | list[bool] | None = None,
        concat_output_from_text_encoder: bool | list[bool] | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> FLMRQueryEncoderOutput:
        r"""Encode queries into late-interaction vectors.

        Args:
            input_ids, attention_mask: (batch, query_length) from [`FLMRQueryEncoderTokenizer`].
            pixel_values: (batch, 3, H, W), or (batch, regions, 3, H, W) for FLMR's regions of interest.
            image_features: (batch, vision_hidden) pre-extracted CLS features (FLMR only).
            concat_output_from_vision_encoder / concat_output_from_text_encoder: include the image /
                text vectors; a list of per-example booleans zeroes that part for the examples marked
                false. Without any image, queries are text-only.

        Returns:
            [`FLMRQueryEncoderOutput`] with ``late_interaction_output`` of shape
            (batch, query_length + n_image_vectors, dim).

        Raises:
            ModelInputError: both ``pixel_values`` and ``image_features``, images for a model without a
                vision encoder or of another batch size or shape, or no part (text or image) to encode.
            MissingTokenizerError: the model has no query tokenizer (needed for its instruction mask).
        """
        del output_attentions  # accepted for compatibility with the original signature
        batch_size = input_ids.shape[0]
        use_vision = (
            self.config.query_concat_output_from_vision_encoder
            if concat_output_from_vision_encoder is None
            else concat_output_from_vision_encoder
        )
        use_text = (
            self.config.query_concat_output_from_text_encoder
            if concat_output_from_text_encoder is None
            else concat_output_from_text_encoder
        )
        has_image = pixel_values is not None or image_features is not None
        if use_vision is True and not has_image:
            use_vision = False
        if use_vision is not False:
            self._check_images(batch_size, pixel_values, image_features, "query")
            self._check_mapping_network_input(pixel_values, image_features)

        input_ids = input_ids.to(self.device)
        text_outputs = self.query_text_encoder(
            input_ids,
            attention_mask=attention_mask.to(self.device),
            output_hidden_states=bool(output_hidden_states),
        )
        text_hidden = text_outputs.last_hidden_state
        mask = self._query_token_mask(input_ids).unsqueeze(2).to(text_hidden.dtype)
        parts, mapped = [], None
        text_vectors = self.query_text_encoder_linear(text_hidden) * mask
        if use_text is not False:
            parts.append(
                self._apply_flags(text_vectors, use_text, batch_size, "concat_output_from_text_encoder")
            )

        vision_outputs = None
        if use_vision is not False:
            need_hidden = self.config.use_transformer_mapping_network or bool(output_hidden_states)
            features, vision_outputs = self._image_cls_features(
                self.query_vision_encoder, pixel_values, image_features, need_hidden
            )
            image_vectors = self._project_images(self.query_vision_projection, features, batch_size)
            if self.config.use_transformer_mapping_network:
                mapping_vectors, mapped = self._mapping_network_vectors(
                    vision_outputs, text_hidden, input_ids
                )
                image_vectors = torch.cat([image_vectors, mapping_vectors], dim=1)
            parts.append(
                self._apply_flags(image_vectors, use_vision, batch_size, "concat_output_from_vision_encoder")
            )
        if not parts:
            raise ModelInputError(
                "query: both concat_output_from_text_encoder and concat_output_from_vision_encoder are off"
            )

        vectors = torch.cat(parts, dim=1)
        return FLMRQueryEncoderOutput(
            pooler_output=vectors[:, 0, :],
            late_interaction_output=F.normalize(vectors, p=2, dim=2),
            text_encoder_hidden_states=text_outputs.hidden_states if output_hidden_states else None,
            vision_encoder_hidden_states=vision_outputs.hidden_states
            if output_hidden_states and vision_outputs is not None
            else None,
            transformer_mapping_network_hidden_states=mapped if output_hidden_states else None,
        )

    def _check_mapping_network_input(
        self, pixel_values: torch.Tensor | None, image_features: torch.Tensor | None
    ) -> None:
        if not self.config.use_transformer_mapping_network:
            return
        if image_features is not None:
            raise ModelInputError(
                "query: this PreFLMR model's transformer mapping network needs the vision encoder's patch states, "
                "so it cannot use pre-extracted image_features; pass pixel_values of shape (batch, 3, H, W)"
            )
        if pixel_values.dim() == 5 and pixel_values.shape[1] != 1:
            raise ModelInputError(
                f"query: PreFLMR takes one image per query, got {pixel_values.shape[1]} regions per query "
                f"(pixel_values of shape {tuple(pixel_values.shape)}); pass (batch, 3, H, W)"
            )

    @staticmethod
    def _apply_flags(
        vectors: torch.Tensor, flag: bool | list[bool], batch_size: int, name: str
    ) -> torch.Tensor:
        per_example = _per_example_flags(flag, batch_size, name)
        return vectors if per_example is None else vectors * per_example.to(vectors.device, vectors.dtype)

    @sized_threads(encoding_work)
    def doc(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.FloatTensor | None = None,
        image_features: torch.FloatTensor | None = None,
        concat_output_from_vision_encoder: bool | None = None,
        concat_output_from_text_encoder: bool | None = None,
        keep_dims: bool = True,
        return_mask: bool = True,
        token_type_ids: torch.LongTensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> FLMRContextEncoderOutput:
        r"""Encode documents into late-interaction vectors.

        Args:
            input_ids, attention_mask: (batch, doc_length) from [`FLMRContextEncoderTokenizer`].
            pixel_values / image_features: one image (or its pre-extracted CLS features) per document;
                their ``mapping_network_prefix_length`` vectors come first.
            keep_dims: return the padded (batch, length, dim) tensor with ``context_mask``; when false,
                a list holding each document's unmasked vectors.
            token_type_ids: as the context tokenizer returns them (all zeros), so ``doc(**encoding)`` works.

        Returns:
            [`FLMRContextEncoderOutput`].

        Raises:
            ModelInputError: as [`query`] does for images and parts.
            MissingTokenizerError: the model has no context tokenizer (needed for its punctuation mask).
        """
        del output_attentions, return_mask  # accepted for compatibility with the original signature
        batch_size = input_ids.shape[0]
        use_vision = (
            self.config.context_concat_output_from_vision_encoder
            if concat_output_from_vision_encoder is None
            else concat_output_from_vision_encoder
        )
        use_text = (
            self.config.context_concat_output_from_text_encoder
            if concat_output_from_text_encoder is None
            else concat_output_from_text_encoder
        )
        if use_vision and pixel_values is None and image_features is None:
            raise ModelInputError(
                "doc: concat_output_from_vision_encoder is on but no pixel_values or image_features were given"
            )

        input_ids = input_ids.to(self.device)
        vectors, masks, text_outputs, vision_outputs = [], [], None, None
        if use_vision:
            self._check_images(batch_size, pixel_values, image_features, "doc")
            features, vision_outputs = self._image_cls_features(
                self.context_vision_encoder, pixel_values, image_features, bool(output_hidden_states)
            )
            image_vectors = self._project_images(self.context_vision_projection, features, batch_size)
            vectors.append(image_vectors)
            masks.append(torch.ones(image_vectors.shape[:2], dtype=torch.bool, device=self.device))
        if use_text:
            text_outputs = self.context_text_encoder(
                input_ids,
                attention_mask=attention_mask.to(self.device),
                token_type_ids=None if token_type_ids is None else token_type_ids.to(self.device),
                output_hidden_states=bool(output_hidden_states),
            )
            text_mask = self._document_token_mask(input_ids)
            text_vectors = self.context_text_encoder_linear(text_outputs.last_hidden_state)
            vectors.append(text_vectors * text_mask.unsqueeze(2).to(text_vectors.dtype))
            masks.append(text_mask)
        if not vectors:
            raise ModelInputError(
                "doc: both concat_output_from_text_encoder and concat_output_from_vision_encoder are off"
            )

        embeddings = F.normalize(torch.cat(vectors, dim=1), p=2, dim=2)
        context_mask = torch.cat(masks, dim=1).unsqueeze(2)
        late_interaction = (
            embeddings
            if keep_dims
            else [d[m] for d, m in zip(embeddings, context_mask.squeeze(2), strict=True)]
        )
        return FLMRContextEncoderOutput(
            pooler_output=embeddings[:, 0, :],
            late_interaction_output=late_interaction,
            context_mask=context_mask if keep_dims else None,
            text_encoder_hidden_states=text_outputs.hidden_states
            if output_hidden_states and text_outputs is not None
            else None,
            vision_encoder_hidden_states=vision_outputs.hidden_states
            if output_hidden_states and vision_outputs is not None
            else None,
        )

    # -------------------------------------------------------------------------------------------
    # scoring and training
    # -------------------------------------------------------------------------------------------
    @staticmethod
    def score(Q: torch.Tensor, D_padded: torch.Tensor, D_mask: torch.Tensor) -> torch.Tensor:
        r"""Late-interaction (MaxSim) scores.

        Args:
            Q: (n, query_length, dim), or (1, query_length, dim) to score one query against every document.
            D_padded: (n, doc_length, dim) document vectors.
            D_mask: (n, doc_length) or (n, doc_length, 1), true on the vectors that count.

        Returns:
            (n,) scores: for every query vector the best document vector's dot product, summed.
        """
        similarities = D_padded @ Q.to(D_padded.dtype).transpose(1, 2)
        padding = ~D_mask.reshape(similarities.shape[0], similarities.shape[1]).bool()
        similarities = similarities.masked_fill(padding.unsqueeze(2), MASKED_DOCUMENT_SCORE)
        return similarities.max(dim=1).values.sum(dim=-1)

    def _in_batch_negative_loss(self, Q: torch.Tensor, D: torch.Tensor, D_mask: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of every query against every document of the batch (its positive as target)."""
        Q, D, D_mask = Q.float(), D.float(), D_mask.reshape(D.shape[0], D.shape[1]).bool()
        # (queries, documents, doc_length, query_length)
        similarities = torch.einsum("nld,qkd->qnlk", D, Q)
        similarities = similarities.masked_fill(~D_mask[None, :, :, None], MASKED_DOCUMENT_SCORE)
        in_batch_scores = similarities.max(dim=2).values.sum(dim=-1)
        documents_per_query = D.shape[0] // Q.shape[0]
        targets = torch.arange(Q.shape[0], device=Q.device) * documents_per_query
        return F.cross_entropy(in_batch_scores, targets)

    def forward(
        self,
        query_input_ids: torch.LongTensor,
        query_attention_mask: torch.Tensor,
        context_input_ids: torch.LongTensor,
        context_attention_mask: torch.Tensor,
        query_pixel_values: torch.FloatTensor | None = None,
        query_image_features: torch.FloatTensor | None = None,
        context_pixel_values: torch.FloatTensor | None = None,
        context_image_features: torch.FloatTensor | None = None,
        use_in_batch_negatives: bool = True,
        in_batch_negatives_from_all_gpus: bool = False,
        num_negative_examples: int = 1,
        query_concat_output_from_vision_encoder: bool | list[bool] | None = None,
        query_concat_output_from_text_encoder: bool | list[bool] | None = None,
        context_concat_output_from_vision_encoder: bool | None = None,
        context_concat_output_from_text_encoder: bool | None = None,
        return_dict: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> FLMRModelForRetrievalOutput | tuple:
        r"""Contrastive training step.

        Contexts are ``batch * (1 + num_negative_examples)`` documents, each query's positive first:
        ``[pos_1, neg_1_1, ..., pos_2, neg_2_1, ...]``.

        Returns:
            [`FLMRModelForRetrievalOutput`]: ``loss`` is the in-batch loss when
            ``use_in_batch_negatives`` (each query against every document of the batch, gathered from
            all processes with ``in_batch_negatives_from_all_gpus``), else the cross-entropy over each
            query's own group with its positive as target. ``scores`` is (batch, 1 + negatives).

        Raises:
            ModelInputError: the contexts are not ``batch * (1 + num_negative_examples)`` documents, or
                as [`query`] and [`doc`] do for their inputs.
        """
        Q = self.query(
            query_input_ids,
            query_attention_mask,
            pixel_values=query_pixel_values,
            image_features=query_image_features,
            concat_output_from_vision_encoder=query_concat_output_from_vision_encoder,
            concat_output_from_text_encoder=query_concat_output_from_text_encoder,
        ).late_interaction_output
        context = self.doc(
            context_input_ids,
            context_attention_mask,
            pixel_values=context_pixel_values,
            image_features=context_image_features,
            concat_output_from_vision_encoder=context_concat_output_from_vision_encoder,
            concat_output_from_text_encoder=context_concat_output_from_text_encoder,
            keep_dims=True,
        )
        D, D_mask = context.late_interaction_output, context.context_mask
        group_size = num_negative_examples + 1
        if D.shape[0] != Q.shape[0] * group_size:
            raise ModelInputError(
                f"forward: {Q.shape[0]} queries with num_negative_examples={num_negative_examples} need "
                f"{Q.shape[0] * group_size} contexts, got {D.shape[0]}"
            )
        scores = self.score(Q.repeat_interleave(group_size, dim=0), D, D_mask).view(-1, group_size)
        in_batch_loss = None
        if use_in_batch_negatives:
            if in_batch_negatives_from_all_gpus and dist.is_available() and dist.is_initialized():
                Q, D, D_mask = gather_across_processes(Q, D, D_mask)
            in_batch_loss = self._in_batch_negative_loss(Q, D, D_mask)
            loss = in_batch_loss
        else:
            loss = F.cross_entropy(
                scores, torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device)
            )
        output = FLMRModelForRetrievalOutput(
            loss=loss,
            scores=scores,
            in_batch_negative_loss=in_batch_loss,
            query_late_interaction_output=Q,
            context_late_interaction_output=D,
        )
        return (
            output
            if (return_dict if return_dict is not None else self.config.use_return_dict)
            else output.to_tuple()
        )

    # -------------------------------------------------------------------------------------------
    # loading and saving
    # -------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *model_args: Any,
        config: FLMRConfig | None = None,
        query_tokenizer: FLMRQueryEncoderTokenizer | None = None,
        context_tokenizer: FLMRContextEncoderTokenizer | None = None,
        **kwargs: Any,
    ) -> "FLMRModelForRetrieval":
        r"""Load a checkpoint in any of the original's key layouts (``pytorch_model.bin`` or safetensors).

        The tokenizers are read from the checkpoint's ``query_tokenizer/`` and ``context_tokenizer/``
        folders unless given. Keyword arguments that name [`FLMRConfig`] fields override the config;
        the rest go to transformers' ``from_pretrained`` (``dtype``, ``device_map``,
        ``output_loading_info``, ``attn_implementation``, ...).

        Example:
            >>> FLMRModelForRetrieval.from_pretrained("my_checkpoint", dtype=torch.bfloat16).dtype
            torch.bfloat16
        """
        path = str(pretrained_model_name_or_path)
        hub_kwargs = {k: kwargs.pop(k) for k in HUB_KWARGS if k in kwargs}
        probe_file = "/".join(p for p in (hub_kwargs.get("subfolder"), CONFIG_NAME) if p)
        if cache_only(pretrained_model_name_or_path, "checkpoint", probe_file, hub_kwargs.get("revision")):
            hub_kwargs["local_files_only"] = True
        config_overrides = {
            k: kwargs.pop(k) for k in list(kwargs) if k in {f.name for f in fields(FLMRConfig)}
        }
        if config is None:
            config = FLMRConfig.from_pretrained(path, **hub_kwargs, **config_overrides)
        query_tokenizer = query_tokenizer or _load_tokenizer(
            FLMRQueryEncoderTokenizer, path, QUERY_TOKENIZER_FOLDER, config, hub_kwargs
        )
        context_tokenizer = context_tokenizer or _load_tokenizer(
            FLMRContextEncoderTokenizer, path, CONTEXT_TOKENIZER_FOLDER, config, hub_kwargs
        )

        with torch.device("meta"):
            model_keys = list(cls(config).state_dict().keys())
        checkpoint = _read_checkpoint(path, hub_kwargs)
        state_dict, missing, unexpected = to_model_layout(checkpoint, model_keys, config)
        del checkpoint
        output_loading_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(
            None,
            *model_args,
            config=config,
            state_dict=state_dict,
            query_tokenizer=query_tokenizer,
            context_tokenizer=context_tokenizer,
            output_loading_info=True,
            **kwargs,
        )
        # Loading from a state dict leaves the source unnamed; record where the weights came from.
        model.config._name_or_path = model.name_or_path = path
        info["missing_keys"] = sorted(set(info.get("missing_keys", [])) | set(missing))
        info["unexpected_keys"] = sorted(set(info.get("unexpected_keys", [])) | set(unexpected))
        if missing:
            logger.warning(
                f"{len(missing)} weights were not in {path} and are newly initialised: {missing[:5]}"
            )
        if unexpected:
            logger.warning(
                f"{len(unexpected)} tensors of {path} belong to no module of this model: {unexpected[:5]}"
            )
        return (model, info) if output_loading_info else model

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> None:
        """Save as safetensors in the published checkpoints' key layout, with both tokenizers and, for a
        model with a vision encoder, its image processor's ``preprocessor_config.json`` (see
        [`load_image_processor`]), so that the folder loads without the network.

        Example:
            >>> model.save_pretrained("my_flmr")
            >>> FLMRModelForRetrieval.from_pretrained("my_flmr").config.dim
            16
        """
        state_dict = kwargs.pop("state_dict", None) or self.state_dict()
        super().save_pretrained(
            save_directory, state_dict=to_published_layout(state_dict, self.config), **kwargs
        )
        for folder, tokenizer in (
            (QUERY_TOKENIZER_FOLDER, self.query_tokenizer),
            (CONTEXT_TOKENIZER_FOLDER, self.context_tokenizer),
        ):
            if tokenizer is not None:
                tokenizer.save_pretrained(os.path.join(save_directory, folder))
        if self.config.use_vision_encoder:
            load_image_processor(self.config).save_pretrained(save_directory)


def _load_tokenizer(cls: type, path: str, folder: str, config: FLMRConfig, hub_kwargs: dict) -> Any:
    kwargs = {k: v for k, v in hub_kwargs.items() if k != "subfolder"}
    subfolder = "/".join(p for p in (hub_kwargs.get("subfolder"), folder) if p)
    lookup = {**kwargs, "subfolder": subfolder, "_raise_exceptions_for_missing_entries": False}
    # transformers builds an empty tokenizer from a missing folder instead of failing, so look first.
    if not any(cached_file(path, name, **lookup) for name in TOKENIZER_FILES):
        raise MissingTokenizerError(
            folder,
            f"{path} has no {folder}/ folder with a vocabulary ({' or '.join(TOKENIZER_FILES)}); an FLMR "
            f"checkpoint keeps its tokenizers there. Pass {folder}={cls.__name__}.from_pretrained(<a folder "
            "with a BERT vocab.txt>) to from_pretrained",
        )
    return cls.from_pretrained(path, subfolder=subfolder, text_config=config.text_config, **kwargs)


def _read_checkpoint(path: str, hub_kwargs: dict) -> dict[str, torch.Tensor]:
    """All tensors of the checkpoint's weight file(s): safetensors preferred, sharded or not."""
    lookup = {**hub_kwargs, "_raise_exceptions_for_missing_entries": False}
    for weights_name in WEIGHT_FILES:
        index = cached_file(path, weights_name + ".index.json", **lookup)
        files = _shard_files(path, index, lookup) if index else [cached_file(path, weights_name, **lookup)]
        if all(files):
            tensors: dict[str, torch.Tensor] = {}
            for file in files:
                tensors.update(
                    load_file(file)
                    if file.endswith(".safetensors")
                    else torch.load(file, map_location="cpu", weights_only=True)
                )
            return tensors
    raise OSError(
        f"{path} holds no model weights: expected one of {', '.join(WEIGHT_FILES)} (or a sharded index of them)"
    )


def _shard_files(path: str, index_file: str, lookup: dict) -> list[str | None]:
    import json

    with open(index_file) as handle:
        shard_names = sorted(set(json.load(handle)["weight_map"].values()))
    return [cached_file(path, name, **lookup) for name in shard_names]


def gather_across_processes(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """All-gather (batch, length, ...) tensors from every process, padding lengths to the longest.

    Gradients flow back to this process's slice, so in-batch negatives from all GPUs train every rank.
    """
    from torch.distributed.nn.functional import all_gather

    gathered = []
    for tensor in tensors:
        length = torch.tensor([tensor.shape[1]], device=tensor.device)
        lengths = [torch.zeros_like(length) for _ in range(dist.get_world_size())]
        dist.all_gather(lengths, length)
        padded = F.pad(tensor, (0, 0) * (tensor.dim() - 2) + (0, int(max(lengths)) - tensor.shape[1]))
        gathered.append(torch.cat(all_gather(padded), dim=0))
    return tuple(gathered)


__all__ = [
    "FLMRContextEncoderOutput",
    "FLMRModelForRetrieval",
    "FLMRModelForRetrievalOutput",
    "FLMRMultiLayerPerceptron",
    "FLMRPreTrainedModel",
    "FLMRQueryEncoderOutput",
    "FLMRTextModel",
    "FLMRVisionModel",
]
