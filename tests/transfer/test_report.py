import numpy as np
import pytest
from PIL import Image

from transfer.report import Report


def test_report_renders_markdown_and_html_with_relative_images(tmp_path):
    (tmp_path / "figs").mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "figs" / "a.png")
    report = Report("Run <1>", tmp_path)
    report.heading("Counts").table(["what", "n"], [["aligned", 3], ["ratio", 0.123456]], caption="a|b")
    report.text("x < y & z").image(tmp_path / "figs" / "a.png", "a face").code("facegan demo")
    md_path, html_path = report.write()
    md, page = md_path.read_text(), html_path.read_text()
    assert "| aligned | 3 |" in md and "0.1235" in md and "![a face](figs/a.png)" in md
    assert "<img src='figs/a.png'" in page and "Run &lt;1&gt;" in page and "x &lt; y &amp; z" in page
    assert "http" not in page, "the report must not reference the network"


def test_missing_image_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Report("r", tmp_path).image(tmp_path / "nope.png")
