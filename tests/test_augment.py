"""Image corruptions: each method changes the image, is deterministic per seed, and keeps the size."""
import numpy as np
import pytest
from PIL import Image, ImageDraw

from sicog.generate.augment import choose_method, corrupt, parse_methods
from sicog.generate.settings import AUGMENT_METHODS


def scene(w=96, h=64):
    img = Image.new("RGB", (w, h), (200, 220, 240))
    d = ImageDraw.Draw(img)
    d.rectangle([5, 5, 40, 30], fill=(220, 30, 30))
    d.ellipse([50, 20, 90, 60], fill=(30, 160, 40))
    d.text((10, 40), "A7", fill=(0, 0, 0))
    return img


@pytest.mark.parametrize("method", AUGMENT_METHODS)
def test_corruption_changes_image_and_is_deterministic(method):
    img = scene()
    a, b = corrupt(img, method, seed=3), corrupt(img, method, seed=3)
    c = corrupt(img, method, seed=4)
    arr = np.asarray(img, dtype=np.int16)
    assert a.size == img.size and a.mode == "RGB"
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert np.abs(np.asarray(a, dtype=np.int16) - arr).mean() > 2.0
    assert not np.array_equal(np.asarray(a), np.asarray(c))


def test_mask_blacks_out_rectangles_only():
    img = Image.new("RGB", (80, 60), (255, 255, 255))
    out = np.asarray(corrupt(img, "mask", seed=0))
    black = (out == 0).all(-1)
    assert 0.05 < black.mean() < 0.9
    assert ((out == 255).all(-1) | black).all()


def test_tiny_and_odd_images_do_not_crash():
    for size in [(1, 1), (3, 2), (17, 5)]:
        for m in AUGMENT_METHODS:
            assert corrupt(Image.new("L", size, 128), m, seed=1).size == size


def test_method_choice_is_seeded_by_id_and_parse_rejects_unknown():
    methods = parse_methods("gaussian_blur, mask,mask")
    assert methods == ["gaussian_blur", "mask"]
    picks = [choose_method(methods, 0, f"id{i}") for i in range(40)]
    assert set(picks) == set(methods)
    assert picks == [choose_method(methods, 0, f"id{i}") for i in range(40)]
    assert parse_methods("") == []
    with pytest.raises(ValueError, match="imgaug_blur"):
        parse_methods("gaussian_blur,imgaug_blur")
    with pytest.raises(ValueError):
        corrupt(scene(), "blur", 0)
