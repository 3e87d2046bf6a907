"""The SICOG model (LLaVA-UHD v1), shaped like transformers' LLaVA.

`SicogModel` is the base model: `vision_tower` (CLIPVisionModel), `projector` (spatial resampler or
MLP) and `language_model` (Qwen2Model, no head); it merges the image features into the text
embeddings. `SicogForConditionalGeneration` puts the LM head (`lm_head`) on it and adds
`GenerationMixin`.

Checkpoints keep the names of the model before the split (`vision_tower.*`, `projector.*`,
`language_model.model.*`, `language_model.lm_head.*`): `CHECKPOINT_PREFIXES`, registered with
transformers' conversion mapping for `model_type` "sicog", renames them on load and back on save
(`model_key` does the same for a resumed run: `sicog.train.artefacts.load_model_weights`).
"""
from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn
from transformers import CLIPVisionModel, GenerationMixin, PreTrainedModel, Qwen2Model
from transformers import initialization as init
from transformers.conversion_mapping import register_checkpoint_conversion_mapping
from transformers.core_model_loading import WeightRenaming
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import slice_logits_to_keep

from .configuration import SicogConfig
from .image_input import ImageInput
from .loss import supervised_lm_loss
from .projector import build_projector
from .resampler import SpatialResampler
from .vision import feature_states, layers_to_run

# (name prefix in a checkpoint, in the model): checkpoints keep the layout from before the split.
CHECKPOINT_PREFIXES = (
    ("language_model.model.", "model.language_model."),
    ("language_model.lm_head.", "lm_head."),
    ("vision_tower.", "model.vision_tower."),
    ("projector.", "model.projector."),
)
register_checkpoint_conversion_mapping(
    SicogConfig.model_type, [WeightRenaming("^" + saved, ours) for saved, ours in CHECKPOINT_PREFIXES], overwrite=True)


def _renamed(key: str, prefixes) -> str:
    for old, new in prefixes:
        if key.startswith(old):
            return new + key[len(old):]
    return key


def model_key(saved_key: str) -> str:
    """The model's parameter name for a tensor name of a saved checkpoint."""
    return _renamed(saved_key, CHECKPOINT_PREFIXES)


def checkpoint_key(model_key: str) -> str:
    """The name a checkpoint saves the model's parameter `model_key` under."""
    return _renamed(model_key, [(ours, saved) for saved, ours in CHECKPOINT_PREFIXES])


def causal_lm_view(model: "SicogForConditionalGeneration") -> nn.Module:
    """The language model and LM head under the names of a HF causal-LM folder (`model.*`, `lm_head.*`).

    A view: it holds the model's own modules, so loading into it loads into the model.
    """
    view = nn.Module()
    view.model, view.lm_head = model.language_model, model.lm_head
    return view


def _max_over_ranks(value: int, device: torch.device) -> int:
    """The largest `value` over all ranks (one all-reduce), or `value` itself in a single process."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    t = torch.tensor([value], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


class SicogPreTrainedModel(PreTrainedModel):
    config: SicogConfig
    config_class = SicogConfig
    base_model_prefix = "model"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["CLIPEncoderLayer", "Qwen2DecoderLayer"]
    _skip_keys_device_placement = ["past_key_values"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, SpatialResampler):
            init.trunc_normal_(module.query, std=0.02)

    @property
    def layout(self):
        """The token layout at `<image>` (shared with the processor), from the config."""
        return self.config.layout

    def unused_vision_parameters(self) -> dict[str, nn.Parameter]:
        """Tower parameters that never run: the layers above `vision_feature_layer` and `post_layernorm`.

        `vision_features` stops at the feature layer, so these never get a gradient; training
        freezes them (`sicog.train.stages.freeze`) rather than deleting them, so that a saved model
        keeps the tower's full CLIP layout and loads anywhere CLIP does. Named as `named_parameters`
        names them.
        """
        tower = self.vision_tower
        above = tower.encoder.layers[layers_to_run(tower, self.config.vision_feature_layer):]
        idle = {id(p) for m in (*above, tower.post_layernorm) for p in m.parameters()}
        return {name: p for name, p in self.named_parameters() if id(p) in idle}


class SicogModel(SicogPreTrainedModel):
    """The base model: vision tower, projector and language model (no LM head).

    `forward(input_ids, attention_mask, images)` merges the image features into the token
    embeddings at the `<image>` positions the processor wrote (`embed_inputs`) and returns the
    language model's last hidden states.
    """

    def __init__(self, config: SicogConfig, init_projector: bool = True):
        """`init_projector=False`: the projector's random weights are left to the caller (the head)."""
        super().__init__(config)
        self.vision_tower = CLIPVisionModel(config.vision_config)
        self.projector = build_projector(config)
        self.language_model = Qwen2Model(config.text_config)
        self._init_projector = init_projector
        self.post_init()

    def init_weights(self):
        if self._init_projector:  # the tower and the language model initialised themselves
            super().init_weights()

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    # --- images -------------------------------------------------------------------------
    @property
    def num_vision_layers(self) -> int:
        """CLIP layers run to reach `vision_feature_layer` (hidden_states[k], k = 0 the embeddings)."""
        return layers_to_run(self.vision_tower, self.config.vision_feature_layer)

    def vision_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """[N, 3, h, w] -> CLIP features [N, (h/p)*(w/p), C] of `vision_feature_layer`, CLS dropped.

        Equal to `vision_tower(..., output_hidden_states=True).hidden_states[vision_feature_layer]`
        without running the layers above it, position embeddings interpolated to each size as
        CLIP's `interpolate_pos_encoding` does, every module called in the same order whatever the
        size (ZeRO-3's prefetch order; `sicog.model.vision.embeddings`).
        """
        return feature_states(self.vision_tower, pixels, self.num_vision_layers)[:, 1:]

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """[N, 3, h, w] equal-size images -> projected tokens [N, T, D]."""
        patch = self.config.patch_size
        n, _, h, w = pixels.shape
        feats = self.vision_features(pixels)
        return self.projector(feats.reshape(n, h // patch, w // patch, feats.shape[-1]))

    def get_image_features(self, images: list[ImageInput]) -> list[torch.Tensor]:
        """Per image, its feature tokens [num_features, D] in the layout's order.

        Overviews and slices of equal size (across all images) go through the vision tower and
        the projector in one call.
        """
        units: list[torch.Tensor] = []
        for im in images:
            units.append(im.overview)
            if im.slices is not None:
                units.extend(im.slices.unbind(0))
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, u in enumerate(units):
            groups[tuple(u.shape[-2:])].append(i)
        tokens: list[torch.Tensor | None] = [None] * len(units)
        device = self.vision_tower.device
        for idx in groups.values():
            out = self.encode_pixels(torch.stack([units[i] for i in idx]).to(device))
            for j, i in enumerate(idx):
                tokens[i] = out[j]

        q = self.config.query_grid
        result, k = [], 0
        for im in images:
            overview = tokens[k]
            k += 1
            if im.slices is None:
                result.append(overview)
                continue
            cols, rows = im.grid
            sl = torch.stack(tokens[k:k + cols * rows])                              # [S, Q*Q, D]
            k += cols * rows
            raster = sl.view(rows, cols, q, q, -1).permute(0, 2, 1, 3, 4).reshape(-1, sl.shape[-1])
            result.append(torch.cat([raster, overview], dim=0))
        return result

    def _vision_trains(self) -> bool:
        return torch.is_grad_enabled() and any(
            p.requires_grad for part in (self.vision_tower, self.projector) for p in part.parameters())

    def _idle_vision_term(self) -> torch.Tensor:
        """A zero that depends on every used vision and projector parameter.

        Why: under DeepSpeed ZeRO (and DDP) each rank reduces gradients as its backward produces
        them, parameter by parameter, and ZeRO-3 also gathers the tower's weights during forward.
        A rank whose batch has no image (text-only records, or a batch whose samples all failed to
        load) would skip the tower and projector and so issue fewer collectives than a rank with
        images: a hang on NCCL, a "collective mismatch" on gloo, or wrong gradients. Running one
        blank overview image through the tower and projector and adding its output times zero
        keeps every rank's forward and backward the same graph; the gradients it adds are exact
        zeros, so the step equals the single-process one. (DDP's find_unused_parameters does not
        help ZeRO, and skipping the collectives per rank cannot be expressed to it.)

        ZeRO-3 also gathers the tower's and projector's weights at every call, and a batch makes
        one call per distinct image size; so every rank pads its calls with blank ones up to the
        most any rank makes this step (`embed_inputs`). The cost: one small all-reduce per step,
        and one blank image through the tower for each call a rank is short of.
        """
        side = self.config.vision_config.image_size
        blank = torch.zeros(1, 3, side, side, device=self.vision_tower.device, dtype=self.vision_tower.dtype)
        return self.encode_pixels(blank).sum() * 0.0

    def get_placeholder_mask(self, input_ids: torch.LongTensor, images: list[ImageInput | None]) -> torch.Tensor:
        """The `<image>` positions of `input_ids` ([B, L] bool), checked against each row's image."""
        image_id = self.config.image_token_id
        mask = input_ids == image_id if image_id is not None else torch.zeros_like(input_ids, dtype=torch.bool)
        if len(images) != input_ids.shape[0]:
            raise ValueError(f"{len(images)} image entries for a batch of {input_ids.shape[0]} sequences")
        per_row = mask.sum(dim=1).tolist()
        for b, (im, n) in enumerate(zip(images, per_row)):
            expected = 0 if im is None else self.layout.num_features(im.grid)
            if n != expected:
                raise ValueError(
                    f"sequence {b} has {n} image-token positions but its image gives {expected} features "
                    f"(grid {None if im is None else im.grid}); encode text and image with the same processor settings"
                )
        return mask

    def embed_inputs(self, input_ids: torch.LongTensor, images: list[ImageInput | None] | None) -> torch.Tensor:
        """Token embeddings with the image features merged in at the image-token positions.

        The merge is out of place (`masked_scatter`), so the embedding output may be a leaf that
        requires grad (transformers' input-grad hook under activation checkpointing) with a frozen LLM.
        """
        embeds = self.get_input_embeddings()(input_ids)
        images = list(images) if images is not None else [None] * input_ids.shape[0]
        mask = self.get_placeholder_mask(input_ids, images)
        present = [im for im in images if im is not None]
        blank_calls = 0
        if self._vision_trains():  # before any tower call: ZeRO-3 gathers weights inside them
            calls = len({tuple(u.shape[-2:]) for im in present
                         for u in (im.overview, *(() if im.slices is None else im.slices))})
            blank_calls = _max_over_ranks(max(calls, 1), embeds.device) - calls
        if present:
            feats = torch.cat(self.get_image_features(present), dim=0).to(embeds.dtype)
            embeds = embeds.masked_scatter(mask.unsqueeze(-1), feats)
        for _ in range(blank_calls):
            embeds = embeds + self._idle_vision_term()
        return embeds

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values=None,
        inputs_embeds: torch.Tensor | None = None,
        images: list[ImageInput | None] | None = None,
        use_cache: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        if inputs_embeds is None:
            if input_ids is None:
                raise ValueError("pass input_ids or inputs_embeds")
            inputs_embeds = self.embed_inputs(input_ids, images)
        elif images is not None:
            raise ValueError("images are merged from input_ids; pass input_ids, not inputs_embeds, with images")
        cache = past_key_values if past_key_values is not None else kwargs.pop("cache", None)
        if position_ids is None and attention_mask is not None and attention_mask.dim() == 2 and (
                cache is None or cache.get_seq_length() == 0):
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        return self.language_model(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                   position_ids=position_ids, cache=cache, use_cache=use_cache, **kwargs)


class SicogForConditionalGeneration(SicogPreTrainedModel, GenerationMixin):
    """`SicogModel` with the LM head: what SICOG trains, generates with and saves.

    `forward(input_ids, attention_mask, labels, images)`: in training mode with `labels` it returns
    the loss only (`sicog.model.loss`), otherwise the logits; `generate(..., images=...)` uses the
    images in the prefill only.
    """

    _tied_weights_keys = {"lm_head.weight": "model.language_model.embed_tokens.weight"}

    def __init__(self, config: SicogConfig):
        super().__init__(config)
        self.model = SicogModel(config, init_projector=False)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    def initialize_weights(self):
        """Random weights drawn in the order of the model before the base/head split (tower, language
        model, LM head, projector), so that a seed gives the same model as it did then."""
        self._initialize_weights(self.lm_head, self.is_custom_code())
        super().initialize_weights()

    # --- the base model's parts ---------------------------------------------------------------
    @property
    def vision_tower(self) -> CLIPVisionModel:
        return self.model.vision_tower

    @property
    def projector(self) -> nn.Module:
        return self.model.projector

    @property
    def language_model(self) -> Qwen2Model:
        return self.model.language_model

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.lm_head = value

    def get_decoder(self):
        return self.model.language_model

    def get_image_features(self, images: list[ImageInput]) -> list[torch.Tensor]:
        """Per image, its feature tokens [num_features, D] (`SicogModel.get_image_features`)."""
        return self.model.get_image_features(images)

    def embed_inputs(self, input_ids: torch.LongTensor, images: list[ImageInput | None] | None) -> torch.Tensor:
        """Token embeddings with the image features merged in (`SicogModel.embed_inputs`)."""
        return self.model.embed_inputs(input_ids, images)

    # --- forward / generation ---------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values=None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        images: list[ImageInput | None] | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        num_items = kwargs.pop("num_items_in_batch", None)
        # training: the loss alone (logits=None), from logits at supervised positions only and the
        # fp32 loss in chunks (sicog.model.loss). In eval mode the full logits come back.
        loss_only = labels is not None and self.training and past_key_values is None
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         past_key_values=past_key_values, inputs_embeds=inputs_embeds, images=images,
                         use_cache=False if loss_only else use_cache, **kwargs)
        if loss_only:
            loss = supervised_lm_loss(out.last_hidden_state, labels, self.lm_head, num_items)
            return CausalLMOutputWithPast(loss=loss)
        logits = self.lm_head(slice_logits_to_keep(out.last_hidden_state, logits_to_keep))
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size,
                                      num_items_in_batch=num_items, **kwargs)
        return CausalLMOutputWithPast(loss=loss, logits=logits, cache=out.cache, hidden_states=out.hidden_states,
                                      attentions=out.attentions)

    def generate(self, *args, **kwargs):
        """GenerationMixin.generate that never emits `<image>` (a generated one has no image features)."""
        image_id = self.config.image_token_id
        if image_id is not None:
            suppress = kwargs.pop("suppress_tokens", None) or getattr(self.generation_config, "suppress_tokens", None)
            kwargs["suppress_tokens"] = sorted(set(suppress or []) | {image_id})
        return super().generate(*args, **kwargs)

    def prepare_inputs_for_generation(self, input_ids, images=None, is_first_iteration=False, **kwargs):
        model_inputs = super().prepare_inputs_for_generation(input_ids, is_first_iteration=is_first_iteration, **kwargs)
        model_inputs.pop("images", None)
        if images is not None and (is_first_iteration or not kwargs.get("use_cache", True)):
            batch = model_inputs["input_ids"].shape[0]
            if len(images) != batch and len(images) and batch % len(images) == 0:
                # num_return_sequences / beams expand the text batch; repeat each image alike
                images = [im for im in images for _ in range(batch // len(images))]
            model_inputs["images"] = images
        return model_inputs
