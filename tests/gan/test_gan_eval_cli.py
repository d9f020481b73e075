"""`facegan gan eval`: reference faces aligned as for training, FD-face on them, clear errors."""
import json

import numpy as np
import pytest
from PIL import Image, ImageFilter

from transfer.cli import main


@pytest.fixture()
def photos(tmp_path, astronaut_rgb):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, gain in enumerate((0.8, 0.9, 1.0, 1.1, 1.2)):
        shifted = np.clip(astronaut_rgb.astype(float) * gain + 10 * i, 0, 255).astype(np.uint8)
        Image.fromarray(shifted[: 300 + 10 * i, 80 + 5 * i : 400]).save(folder / f"p{i}.png")
    return folder


def test_fd_face_of_identical_and_blurred_sets(tmp_path, photos, monkeypatch):
    pytest.importorskip("dlib", reason="FD-face needs the [metrics] extra (dlib-bin)")
    from gan.metrics.face_embedding import FaceEmbedder

    embedded, embed = [], FaceEmbedder.embed
    monkeypatch.setattr(FaceEmbedder, "__call__", lambda self, images: embedded.append(len(images)) or embed(self, images))
    cache = tmp_path / "cache"
    base = ["gan", "eval", "--real", "folder", "--root", str(photos), "--split", "all", "--image-size", "64",
            "--cache-dir", str(cache), "-n", "5"]
    # Write the aligned reference faces out: as "generated" faces they must score ~0.
    from data_prep.cache import AlignedFaceCache

    assert main(base + ["--metrics", "fd-face", str(photos)]) == 0  # builds the cache (photos vs themselves)
    same, blurred = tmp_path / "same", tmp_path / "blurred"
    same.mkdir(), blurred.mkdir()
    faces = AlignedFaceCache(cache).get_batch(list(range(5))).permute(0, 2, 3, 1).numpy()
    for i, face in enumerate(faces):
        Image.fromarray(face).save(same / f"{i}.png")
        Image.fromarray(face).filter(ImageFilter.GaussianBlur(3)).save(blurred / f"{i}.png")
    assert main(base + [str(same), "--out", str(tmp_path / "same.json")]) == 0
    assert main(base + [str(blurred), "--out", str(tmp_path / "blurred.json")]) == 0
    fd_same = json.loads((tmp_path / "same.json").read_text())["results"]["fd-face"]["fd"]
    fd_blurred = json.loads((tmp_path / "blurred.json").read_text())["results"]["fd-face"]["fd"]
    assert abs(fd_same) < 1e-6 < fd_blurred
    # The reference's 5 faces were embedded by the first eval only (5 + 5); later ones embed the 5 generated faces alone.
    assert sum(embedded) == 10 + 5 + 5 and len(list((tmp_path / "cache-features").glob("*.npy"))) == 1


def test_bad_metric_and_missing_inception_weights_are_clear(tmp_path, photos, monkeypatch, capsys):
    base = ["gan", "eval", str(photos), "--real", "folder", "--root", str(photos), "--split", "all",
            "--image-size", "64", "--cache-dir", str(tmp_path / "cache"), "-n", "5"]
    assert main(base + ["--metrics", "psnr"]) == 2
    assert "--metrics takes" in capsys.readouterr().err
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    monkeypatch.delenv("FACEGAN_INCEPTION_WEIGHTS", raising=False)
    assert main(base + ["--metrics", "fid"]) == 2
    err = capsys.readouterr().err
    assert "weights-inception-2015-12-05-6726825d.pth" in err and "Traceback" not in err
