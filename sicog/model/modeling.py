"""`SicogForConditionalGeneration`: CLIP vision tower + projector + Qwen2 LLM, with `GenerationMixin`."""
from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn
from transformers import CLIPVisionModel, GenerationMixin, PreTrainedModel, Qwen2ForCausalLM
from transformers import initialization as init
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration import SicogConfig
from .image_input import ImageInput
from .loss import supervised_lm_loss
from .projector import build_projector
from .resampler import SpatialResampler


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
    base_model_prefix = ""
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


class SicogForConditionalGeneration(SicogPreTrainedModel, GenerationMixin):
    """LLaVA-UHD v1 as SICOG trains it: `vision_tower` (CLIPVisionModel), `projector` (spatial
    resampler or MLP) and `language_model` (Qwen2ForCausalLM).

    `forward(input_ids, attention_mask, labels, images)` splices the image features at the
    `<image>` positions the processor wrote (`embed_inputs`) and runs the LLM; in training mode
    with `labels` it returns the loss only (`sicog.model.loss`), otherwise the logits; `generate(...,
    images=...)` uses the images in the prefill only.
    """

    def __init__(self, config: SicogConfig):
        super().__init__(config)
        self.vision_tower = CLIPVisionModel(config.vision_config)
        self.projector = build_projector(config)
        self.language_model = Qwen2ForCausalLM(config.text_config)
        self.post_init()

    @property
    def layout(self):
        """The token layout at `<image>` (shared with the processor), from the config."""
        return self.config.layout

    # --- embeddings plumbing for HF utilities (resize, tying, generation) -------------------
    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_output_embeddings(value)

    def get_decoder(self):
        return self.language_model.get_decoder()

    # --- images -------------------------------------------------------------------------
    @property
    def num_vision_layers(self) -> int:
        """CLIP layers run to reach `vision_feature_layer` (hidden_states[k], k = 0 the embeddings)."""
        k = self.config.vision_feature_layer
        total = len(self.vision_tower.encoder.layers)
        n = total + 1 + k if k < 0 else k
        if not 0 <= n <= total:
            raise ValueError(f"vision_feature_layer {k} is out of range for a {total}-layer vision tower")
        return n

    def vision_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """[N, 3, h, w] -> CLIP features [N, (h/p)*(w/p), C] of `vision_feature_layer`, CLS dropped.

        Equal to `vision_tower(..., output_hidden_states=True).hidden_states[vision_feature_layer]`
        without running the layers above it. Position embeddings are interpolated to each
        size bicubically, as CLIP's `interpolate_pos_encoding` does (`vision_embeddings`).
        """
        tower = self.vision_tower
        hidden = tower.pre_layrnorm(self.vision_embeddings(pixels.to(tower.dtype)))
        for layer in tower.encoder.layers[: self.num_vision_layers]:
            hidden = layer(hidden, None)
        return hidden[:, 1:]

    def vision_embeddings(self, pixels: torch.Tensor) -> torch.Tensor:
        """CLS + patch embeddings + position embeddings interpolated (bicubic) to this image size.

        Equal to CLIP's `embeddings(pixels, interpolate_pos_encoding=True)`, but computed so that
        every call runs the same modules in the same order whatever the image size. CLIP's own
        version calls the `position_embedding` module at its native square size and, at any other
        size, reads `position_embedding.weight` without calling that module. Under ZeRO-3 a
        module's weights are gathered when it is called, and each rank replays the call order it
        recorded to prefetch the next weights; so a rank encoding a native-size image (or the blank
        image of `_idle_vision_term`) and a rank encoding a slice or overview of another size
        would gather in different orders: "collective mismatch" on gloo, a hang on NCCL. Here the
        `position_embedding` module is always called and its output (the 2-D table) interpolated.
        `class_embedding`, the only parameter of `embeddings` itself (a module this code never
        calls), is registered with DeepSpeed as gathered together with `patch_embedding`; without
        ZeRO-3 that registration is an unused attribute.
        """
        emb = self.vision_tower.embeddings
        if getattr(emb.class_embedding, "ds_id", None) is not None:  # a ZeRO-3 partitioned parameter
            import deepspeed

            deepspeed.zero.register_external_parameter(emb.patch_embedding, emb.class_embedding)
        n, _, h, w = pixels.shape
        patches = emb.patch_embedding(pixels).flatten(2).transpose(1, 2)          # [N, (h/p)*(w/p), C]
        table = emb.position_embedding(emb.position_ids)                           # [1, 1 + G*G, C]
        grid = int(round((table.shape[1] - 1) ** 0.5))
        gh, gw = h // emb.patch_size, w // emb.patch_size
        if (gh, gw) != (grid, grid):
            cls_pos, patch_pos = table[:, :1], table[:, 1:]
            patch_pos = patch_pos.reshape(1, grid, grid, -1).permute(0, 3, 1, 2)
            patch_pos = nn.functional.interpolate(patch_pos, size=(gh, gw), mode="bicubic", align_corners=False)
            table = torch.cat([cls_pos, patch_pos.permute(0, 2, 3, 1).reshape(1, gh * gw, -1)], dim=1)
        cls = emb.class_embedding.expand(n, 1, -1)
        return torch.cat([cls, patches], dim=1) + table

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """[N, 3, h, w] equal-size images -> projected tokens [N, T, D]."""
        patch = self.config.patch_size
        n, _, h, w = pixels.shape
        feats = self.vision_features(pixels)
        return self.projector(feats.reshape(n, h // patch, w // patch, feats.shape[-1]))

    def encode_images(self, images: list[ImageInput]) -> list[torch.Tensor]:
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

    def unused_vision_parameters(self) -> dict[str, nn.Parameter]:
        """Tower parameters that never run: the layers above `vision_feature_layer` and `post_layernorm`.

        `vision_features` stops at the feature layer, so these never get a gradient; training
        freezes them (`sicog.train.stages.freeze`) rather than deleting them, so that a saved model
        keeps the tower's full CLIP layout and loads anywhere CLIP does.
        """
        tower = self.vision_tower
        idle = {id(p) for m in (*tower.encoder.layers[self.num_vision_layers:], tower.post_layernorm)
                for p in m.parameters()}
        return {name: p for name, p in self.named_parameters() if id(p) in idle}

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

    def embed_inputs(self, input_ids: torch.LongTensor, images: list[ImageInput | None] | None) -> torch.Tensor:
        """Token embeddings with the image features spliced in at the image-token positions."""
        embeds = self.get_input_embeddings()(input_ids)
        image_id = self.config.image_token_id
        mask = input_ids == image_id if image_id is not None else torch.zeros_like(input_ids, dtype=torch.bool)
        images = list(images) if images is not None else [None] * input_ids.shape[0]
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
        present = [im for im in images if im is not None]
        blank_calls = 0
        if self._vision_trains():  # before any tower call: ZeRO-3 gathers weights inside them
            calls = len({tuple(u.shape[-2:]) for im in present
                         for u in (im.overview, *(() if im.slices is None else im.slices))})
            blank_calls = _max_over_ranks(max(calls, 1), embeds.device) - calls
        if present:
            feats = torch.cat(self.encode_images(present), dim=0).to(embeds.dtype)
            embeds[mask] = feats
        for _ in range(blank_calls):
            embeds = embeds + self._idle_vision_term()
        return embeds

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
        if inputs_embeds is None:
            if input_ids is None:
                raise ValueError("pass input_ids or inputs_embeds")
            inputs_embeds = self.embed_inputs(input_ids, images)
        elif images is not None:
            raise ValueError("images are spliced from input_ids; pass input_ids, not inputs_embeds, with images")
        no_past = past_key_values is None or past_key_values.get_seq_length() == 0
        if position_ids is None and attention_mask is not None and attention_mask.dim() == 2 and no_past:
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        if labels is not None and self.training and past_key_values is None:
            # training: the loss alone (logits=None), from logits at supervised positions only and
            # the fp32 loss in chunks (sicog.model.loss). In eval mode the full logits come back.
            num_items = kwargs.pop("num_items_in_batch", None)
            out = self.language_model.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                            position_ids=position_ids, use_cache=False, **kwargs)
            loss = supervised_lm_loss(out.last_hidden_state, labels, self.language_model.lm_head, num_items)
            return CausalLMOutputWithPast(loss=loss, logits=None)
        return self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            labels=labels,
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
            **kwargs,
        )

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
