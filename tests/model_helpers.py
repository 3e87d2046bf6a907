"""Shared by the model tests: a question with an image and seeded random images."""
import torch
from PIL import Image

Q = [{"from": "human", "value": "<image>\nWhat colour is the square?"}]


def image(w: int, h: int, seed: int = 0) -> Image.Image:
    """A seeded random RGB image of w x h pixels."""
    g = torch.Generator().manual_seed(seed)
    arr = (torch.rand(h, w, 3, generator=g) * 255).to(torch.uint8).numpy()
    return Image.fromarray(arr)
