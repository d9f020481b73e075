"""`facegan demo` runs end to end on the built-in data and its report shows every part."""
import re

from transfer.cli import main


def test_demo_writes_a_complete_report(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--num-identities", "12", "--images-per-identity", "2", "--gan-steps", "6",
            "--sr-steps", "8", "--attribute-steps", "12", "--no-progress"]
    code = main(args)
    assert code == 0
    assert str((out / "report.html").resolve()) in capsys.readouterr().out
    page = (out / "report.html").read_text()
    images = re.findall(r"<img src='([^']+)'", page)
    assert len(images) >= 3 and all((out / src).is_file() for src in images), images
    markdown = (out / "report.md").read_text()
    # The bundled real photo and its transformed copy are aligned; broken inputs are reported.
    assert "| astronaut.jpg | aligned |" in markdown and "| astronaut_rotated_shrunk.jpg | aligned |" in markdown
    assert "| broken_truncated.jpg | unreadable | truncated |" in markdown
    assert "| notes.txt | unreadable | not_an_image |" in markdown
    assert "NOT real data" in markdown
    # The SR section measures SR beside bicubic and shows strips; the attribute section grades.
    assert "Face super-resolution" in markdown and "psnr_y (higher is better)" in markdown
    assert any(src.endswith("strips.png") for src in images)
    assert "SA-softmax" in markdown and re.search(r"\| S \| \[[\d.]+, 1\.0\] \| \d+ \|", markdown), markdown
    assert any("risk_coverage" in src for src in images)
    assert "## 4. Face generator" in markdown and "gan/samples/samples_0000006.png" in markdown
    # A second run reuses the synthetic data and the cache instead of redoing them.
    assert main(args) == 0
