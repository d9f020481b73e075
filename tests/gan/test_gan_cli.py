"""`facegan gan train` then `facegan gan sample`, end to end on the built-in data."""
import yaml

from engine.checkpoint import load_checkpoint
from transfer.cli import main


def test_train_resume_and_sample(tmp_path):
    out = tmp_path / "run"
    common = ["gan", "train", "--model", "dcgan", "--image-size", "32", "--out", str(out),
            "--batch-size", "8", "--set", "data.synthetic_identities=6", "--set", "data.synthetic_images_per_identity=2",
            "--set", "gan.dcgan.g_channels=32", "--set", "gan.dcgan.d_channels=32", "--set", "trainer.sample_every=2",
            "--set", "trainer.progress=false", "--set", "gan.num_samples=4", "--threads", "1"]
    args = [*common, "--steps", "4"]
    assert main(args) == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["gan"]["model"] == "dcgan" and saved["trainer"]["max_steps"] == 4
    assert (out / "samples" / "samples_0000004.png").is_file()
    assert load_checkpoint(out / "checkpoints" / "latest.pt")["global_step"] == 4
    # Resuming with more steps continues; resuming with a changed model setting is refused.
    assert main([*common, "--steps", "6", "--resume"]) == 0
    assert load_checkpoint(out / "checkpoints" / "latest.pt")["global_step"] == 6
    assert main([*args, "--resume", "--set", "gan.dcgan.lr_g=0.01"]) == 2

    samples = tmp_path / "samples"
    assert main(["gan", "sample", str(out / "checkpoints" / "latest.pt"), "--out", str(samples), "-n", "3",
                 "--interpolate", "2", "--interpolation-steps", "4"]) == 0
    assert sorted(p.name for p in samples.iterdir()) == ["00000.png", "00001.png", "00002.png", "grid.png", "interpolation.png"]


def test_sample_rejects_a_non_gan_checkpoint(tmp_path, capsys):
    import torch

    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    assert main(["gan", "sample", str(tmp_path / "other.pt"), "--out", str(tmp_path / "s")]) == 2
    assert "not a facegan GAN checkpoint" in capsys.readouterr().err
