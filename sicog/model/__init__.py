"""The SICOG model (LLaVA-UHD v1 architecture), HF-native and registered with the Auto classes."""
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor

from .configuration import SicogConfig
from .image_input import ImageInput
from .modeling import SicogForConditionalGeneration
from .processing import ImageLoadError, SicogProcessor
from .slicing import slice_image

AutoConfig.register(SicogConfig.model_type, SicogConfig, exist_ok=True)
AutoModelForImageTextToText.register(SicogConfig, SicogForConditionalGeneration, exist_ok=True)
AutoModelForCausalLM.register(SicogConfig, SicogForConditionalGeneration, exist_ok=True)
AutoProcessor.register(SicogConfig, SicogProcessor, exist_ok=True)

__all__ = [
    "ImageInput",
    "ImageLoadError",
    "SicogConfig",
    "SicogForConditionalGeneration",
    "SicogProcessor",
    "slice_image",
]
