import numpy as np
import pytest
from PIL import Image

from corpus import EXPECTED, make_corpus
from reidkit.imaging import ImageDecodeError, ResizePolicy, load_rgb, resize_to


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_corpus_file_decodes_or_fails_with_a_reason(corpus, name):
    expected = EXPECTED[name]
    if expected == "ok":
        img = load_rgb(corpus / name)
        assert img.mode == "RGB" and img.width >= 1 and img.height >= 1
        arr = resize_to(img, 32, 24, ResizePolicy())
        assert arr.shape == (32, 24, 3) and arr.dtype == np.uint8
    else:
        with pytest.raises(ImageDecodeError) as info:
            load_rgb(corpus / name)
        assert str(corpus / name) in str(info.value)
        assert expected.lower() in info.value.reason.lower()


def test_exif_orientation_is_applied(corpus):
    img = load_rgb(corpus / "exif_rotated.jpg")
    assert img.size == (60, 40)  # stored 40x60, displayed rotated


def test_sixteen_bit_is_scaled_not_clipped(corpus):
    arr = np.asarray(load_rgb(corpus / "sixteen.png"))
    raw = np.asarray(Image.open(corpus / "sixteen.png")).astype(np.float64)
    assert arr.std() > 20  # clipping at 255 would make almost every pixel white
    assert np.allclose(arr[..., 0], np.round(raw * 255 / 65535), atol=1)


def test_letterbox_keeps_aspect_and_pads():
    img = Image.new("RGB", (100, 50), (255, 255, 255))
    arr = resize_to(img, 100, 100, ResizePolicy(method="letterbox"))
    assert arr[0, 50].tolist() == [0, 0, 0] and arr[50, 50].tolist() == [255, 255, 255]


def test_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="interpolation"):
        ResizePolicy(interpolation="cubicish")
