"""Every kind of file a user may feed the aligner either decodes to HxWx3 uint8 RGB or fails
with a named reason."""
import numpy as np
import pytest
from PIL import Image

from data_prep.images import ImageLoadError, list_images, load_rgb


@pytest.fixture()
def face(astronaut_rgb):
    return astronaut_rgb[::4, ::4].copy()  # 128x128, quick to encode


def _reason(path):
    with pytest.raises(ImageLoadError) as info:
        load_rgb(path)
    return info.value.reason


def test_colour_modes_decode_to_rgb(tmp_path, face):
    Image.fromarray(face).convert("CMYK").save(tmp_path / "cmyk.jpg")
    Image.fromarray(face).convert("L").save(tmp_path / "gray.png")
    Image.fromarray(face).convert("P").save(tmp_path / "palette.png")
    for name in ("cmyk.jpg", "gray.png", "palette.png"):
        array = load_rgb(tmp_path / name)
        assert array.shape == (128, 128, 3) and array.dtype == np.uint8, name
    gray = load_rgb(tmp_path / "gray.png")
    assert np.array_equal(gray[..., 0], gray[..., 2]), "grayscale must be replicated to 3 channels"
    # CMYK round trip stays close to the original colours.
    assert np.abs(load_rgb(tmp_path / "cmyk.jpg").astype(int) - face).mean() < 20


def test_rgba_is_composited_on_white(tmp_path, face):
    rgba = np.dstack([face, np.zeros(face.shape[:2], np.uint8)])  # fully transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "clear.png")
    assert (load_rgb(tmp_path / "clear.png") == 255).all()


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    array = load_rgb(tmp_path / "deep.png")
    assert array.min() == 0 and array.max() == 255
    assert len(np.unique(array[..., 0])) > 200, "a 16-bit ramp must keep its gradation"


def test_exif_rotation_is_applied(tmp_path, face):
    tall = face[:, :64]  # 128 high, 64 wide
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(tall).save(tmp_path / "rotated.jpg", exif=exif.tobytes())
    assert load_rgb(tmp_path / "rotated.jpg").shape == (64, 128, 3)


def test_broken_files_have_reasons(tmp_path, face):
    Image.fromarray(face).save(tmp_path / "good.jpg")
    blob = (tmp_path / "good.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(blob[: len(blob) // 3])
    (tmp_path / "zero.jpg").write_bytes(b"")
    (tmp_path / "notes.jpg").write_text("not an image at all")
    Image.fromarray(face[:10, :10]).save(tmp_path / "tiny.png")
    assert _reason(tmp_path / "truncated.jpg") == "truncated"
    assert _reason(tmp_path / "zero.jpg") == "empty"
    assert _reason(tmp_path / "notes.jpg") == "not_an_image"
    assert _reason(tmp_path / "tiny.png") == "too_small"
    assert _reason(tmp_path / "absent.jpg") == "missing"


def test_huge_images_are_downscaled(tmp_path):
    big = np.zeros((600, 800, 3), np.uint8)
    Image.fromarray(big).save(tmp_path / "big.jpg")
    Image.fromarray(big).save(tmp_path / "big.png")
    for name in ("big.jpg", "big.png"):
        array = load_rgb(tmp_path / name, max_pixels=50_000)
        assert array.shape[0] * array.shape[1] <= 50_000 * 1.05, name
        assert abs(array.shape[1] / array.shape[0] - 800 / 600) < 0.05, "aspect ratio is kept"


def test_list_images_keeps_non_images_and_skips_hidden(tmp_path, face):
    (tmp_path / "a").mkdir()
    Image.fromarray(face).save(tmp_path / "a" / "x.png")
    (tmp_path / "readme.txt").write_text("hi")
    (tmp_path / ".hidden").write_text("x")
    assert [p.name for p in list_images(tmp_path)] == ["x.png", "readme.txt"]


def test_encode_png_keeps_every_pixel_of_rgb_and_grey_faces():
    import io

    from data_prep.images import encode_png

    rng = np.random.default_rng(0)
    smooth = np.clip(np.add.outer(np.arange(64), np.arange(48))[..., None] * [1, 2, 3], 0, 255).astype(np.uint8)
    for image in (rng.integers(0, 256, (37, 23, 3), dtype=np.uint8), smooth, rng.integers(0, 256, (5, 9), dtype=np.uint8),
                  np.zeros((1, 1, 3), np.uint8), smooth[::2, ::-1]):
        decoded = Image.open(io.BytesIO(encode_png(image)))
        assert decoded.mode == ("RGB" if image.ndim == 3 else "L")
        assert np.array_equal(np.asarray(decoded), image)
    with pytest.raises(ValueError, match="uint8"):
        encode_png(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="HxWx3"):
        encode_png(np.zeros((4, 4, 4), np.uint8))
