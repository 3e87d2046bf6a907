"""`SicogConfig`: a CLIP vision config, a Qwen2 text config and the SICOG image settings."""
from __future__ import annotations

from transformers import CLIPVisionConfig, PreTrainedConfig, Qwen2Config
from transformers.configuration_utils import SubConfigSpec

from .layout import ImageLayout

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


class SicogConfig(PreTrainedConfig):
    """Configuration of a SICOG model (LLaVA-UHD v1 architecture).

    Args:
        vision_config: `CLIPVisionConfig` (or its dict) of the vision tower.
        text_config: `Qwen2Config` (or its dict) of the language model.
        projector_type: "resampler" (adaptive spatial resampler, slicing; the paper's model) or
            "mlp" (low-resolution LLaVA variant: one square image_scale image, 2-layer GELU MLP,
            one token per patch).
        image_scale: side of the reference image area (336 at paper scale); slices and the
            overview have area ~image_scale^2.
        max_slices: most slices per image (7 at paper scale).
        query_grid: the resampler's query grid side Q; Q*Q tokens per slice and per overview
            (12 at paper scale).
        resampler_head_dim: head width of the resampler's cross-attention;
            heads = text hidden size / resampler_head_dim.
        vision_feature_layer: CLIP hidden state used as image features (-2: second-to-last).
        eval_long_side: the long side images are resized to before slicing at generation and
            evaluation (the authors use 1024 there but not in training); None disables it.
        image_token_id: id of `<image>` in the tokenizer; the model splices features there.
        row_separator: text of the separator token after each token row of the slice map.
        overview_separator: text of the separator token between the slice map and the overview.
        separator_token_ids: [row_id, overview_id] overriding both separators with raw ids.
            New models look the separators up in their tokenizer ("\\n" and "," are 198 and 11 in
            Qwen2). The authors' released weights were trained with LLaMA's hard-coded ids
            13 and 29892 (`.` and `expl` in Qwen2); set [13, 29892] to run those weights as
            trained.
        image_mean, image_std: per-channel normalisation (CLIP's by default).
    """

    model_type = "sicog"
    sub_configs_defaults = {
        # defaults: the paper's CLIP ViT-L/14-336 and Qwen2-7B-sized text config
        "vision_config": SubConfigSpec(
            config_class=CLIPVisionConfig,
            init_kwargs={
                "hidden_size": 1024,
                "intermediate_size": 4096,
                "num_hidden_layers": 24,
                "num_attention_heads": 16,
                "image_size": 336,
                "patch_size": 14,
                "projection_dim": 768,
            },
        ),
        "text_config": SubConfigSpec(config_class=Qwen2Config),
    }

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    projector_type: str = "resampler"
    image_scale: int = 336
    max_slices: int = 7
    query_grid: int = 12
    resampler_head_dim: int = 128
    vision_feature_layer: int = -2
    eval_long_side: int | None = 1024
    image_token_id: int | None = None
    row_separator: str = "\n"
    overview_separator: str = ","
    separator_token_ids: list[int] | None = None
    image_mean: list[float] | None = None
    image_std: list[float] | None = None

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.image_mean is None:
            self.image_mean = list(CLIP_MEAN)
        if self.image_std is None:
            self.image_std = list(CLIP_STD)
        self.layout  # validates projector_type and image_scale against the patch size
        if self.separator_token_ids is not None and len(self.separator_token_ids) != 2:
            raise ValueError(f"separator_token_ids must be [row_id, overview_id], got {self.separator_token_ids}")
        if self.projector_type == "resampler" and self.text_config.hidden_size % self.resampler_head_dim:
            raise ValueError(
                f"text hidden size {self.text_config.hidden_size} is not a multiple of "
                f"resampler_head_dim {self.resampler_head_dim}"
            )

    @property
    def tie_word_embeddings(self) -> bool:
        """Whether `lm_head` shares the token embeddings: the text config's setting, the one place it is kept."""
        return bool(getattr(self.text_config, "tie_word_embeddings", False))

    @tie_word_embeddings.setter
    def tie_word_embeddings(self, value: bool) -> None:
        self.text_config.tie_word_embeddings = value

    @property
    def patch_size(self) -> int:
        return int(self.vision_config.patch_size)

    @property
    def layout(self) -> ImageLayout:
        return ImageLayout(
            projector_type=self.projector_type,
            image_scale=self.image_scale,
            patch_size=self.patch_size,
            max_slices=self.max_slices,
            query_grid=self.query_grid,
            eval_long_side=self.eval_long_side,
        )
