"""Fuzzing harness for every label-file parser and the image loader.

Each target reads one kind of file. Its inputs are real samples (tests/fixtures and, when
present, ../shared/data/format_samples) put through a few of the damages that copies, sync
tools and hand edits do: cut short, bytes deleted or inserted, lines repeated, swapped or
dropped, CRLF/LF/CR mixed, a byte-order mark, Latin-1 or stray non-UTF-8 bytes, numbers
replaced by NaN, infinities or 400-digit integers, separators swapped, fields added or
removed, an empty file.

The contract is the one every reader promises: the input parses, or a `FaceganError` comes
back whose message names the file (and the line, where the error has one). Any other
exception is a bug. tests/test_fuzz.py runs a few dozen derandomised examples per target;
benchmarks/crash_resume.py --fuzz-examples N runs N per target and reports the counts.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import tempfile
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import hypothesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import FaceganError

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
READERS = FIXTURES / "readers"


def _format_samples() -> Path:
    data = Path(os.environ.get("FACEGAN_DATA", REPO.parent / "shared" / "data"))
    return data / "format_samples"


# ---------------------------------------------------------------------------------------------
# mutations


_NUMBER = re.compile(rb"[-+]?\d+(?:\.\d+)?")
_STRANGE_NUMBERS = [b"nan", b"NaN", b"inf", b"-inf", b"1e309", b"-1e309", b"9" * 400, b"-" + b"9" * 30, b"0x1F",
                    b"1_000", b"\xd9\xa3", b"\xc2\xb2", b"", b"-", b"+", b"1.5e", b"-0", b"00000000000000000001"]
_STRANGE_BYTES = [b"\xef\xbb\xbf", b"\xff\xfe", b"\xe9", b"\x00", b"\x80", b"\xc3", b"\r", b"\n", b"\t", b",", b";",
                  b"#", b'"', b"<html>", b"\xe2\x80\xa8", b"\x0b", b"\x1c", b" "]


def _lines(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True)


@st.composite
def _mutation(draw: st.DrawFn, data: bytes) -> bytes:
    """One damage applied to `data`."""
    kind = draw(st.sampled_from([
        "truncate", "delete", "insert", "strange_bytes", "duplicate_line", "swap_lines", "drop_line",
        "line_endings", "bom", "latin1", "number", "separator", "field_count", "empty",
    ]))
    size = len(data)
    if kind == "empty":
        return b""
    if kind == "truncate":
        return data[: draw(st.integers(0, size))]
    if kind == "delete":
        start = draw(st.integers(0, size))
        return data[:start] + data[start + draw(st.integers(1, 64)):]
    if kind == "insert":
        at = draw(st.integers(0, size))
        return data[:at] + draw(st.binary(min_size=1, max_size=32)) + data[at:]
    if kind == "strange_bytes":
        at = draw(st.integers(0, size))
        return data[:at] + draw(st.sampled_from(_STRANGE_BYTES)) + data[at:]
    if kind == "bom":
        return b"\xef\xbb\xbf" + data
    if kind == "latin1":
        return data.replace(b"e", b"\xe9", draw(st.integers(1, 3)))
    if kind == "number":
        matches = list(_NUMBER.finditer(data))
        if not matches:
            return data
        match = matches[draw(st.integers(0, len(matches) - 1))]
        return data[: match.start()] + draw(st.sampled_from(_STRANGE_NUMBERS)) + data[match.end():]
    lines = _lines(data)
    if not lines:
        return data
    index = draw(st.integers(0, len(lines) - 1))
    if kind == "duplicate_line":
        lines.insert(draw(st.integers(0, len(lines))), lines[index])
    elif kind == "swap_lines":
        other = draw(st.integers(0, len(lines) - 1))
        lines[index], lines[other] = lines[other], lines[index]
    elif kind == "drop_line":
        del lines[index]
    elif kind == "line_endings":
        ending = draw(st.sampled_from([b"\r\n", b"\n", b"\r"]))
        every = draw(st.booleans())
        lines = [
            line.rstrip(b"\r\n") + ending if (every or i == index) and line.endswith((b"\n", b"\r")) else line
            for i, line in enumerate(lines)
        ]
    elif kind == "separator":
        old, new = draw(st.sampled_from([(b"\t", b" "), (b",", b";"), (b";", b","), (b" ", b"\t"), (b",", b"\t"),
                                         (b" ", b"")]))
        lines[index] = lines[index].replace(old, new)
    elif kind == "field_count":
        line = lines[index]
        body, ending = line.rstrip(b"\r\n"), line[len(line.rstrip(b"\r\n")):]
        separator = next((s for s in (b"\t", b";", b",", b" ") if s in body), b" ")
        parts = body.split(separator)
        if draw(st.booleans()) or len(parts) < 2:
            parts.insert(draw(st.integers(0, len(parts))), draw(st.sampled_from([b"", b"1", b"x", b"-1"])))
        else:
            del parts[draw(st.integers(0, len(parts) - 1))]
        lines[index] = separator.join(parts) + ending
    return b"".join(lines)


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A seed (or, rarely, raw bytes) with one to four damages applied in turn."""
    if draw(st.integers(0, 19)) == 0:
        return draw(st.binary(max_size=256))
    data = draw(st.sampled_from(seeds))
    for _ in range(draw(st.integers(1, 4))):
        data = draw(_mutation(data))
    return data


# ---------------------------------------------------------------------------------------------
# targets


@dataclass
class Target:
    """One parser: the seed files it is fuzzed from and how to call it on a written file.

    `file_name` is the name the mutated bytes are written under (readers look at suffixes);
    `companions` are copied beside it untouched (the other list of a pair, a schema sidecar).
    """

    name: str
    seeds: list[Path]
    parse: Callable[[Path], object]
    file_name: str
    companions: dict[str, Path] = field(default_factory=dict)

    def seed_bytes(self) -> list[bytes]:
        return [p.read_bytes() for p in self.seeds if p.is_file()]


def _existing(*paths: Path) -> list[Path]:
    return [p for p in paths if p.is_file()]


def _celeba(file_name: str, parse: Callable[[Path], object], *relative: str) -> list[Target]:
    """Two targets per CelebA file: the official text and the Kaggle CSV layout."""
    samples = _format_samples() / "celeba"
    text = [p for r in relative for p in _existing(READERS / "celeba" / r)]
    text += _existing(samples / file_name)
    stem = Path(file_name).stem
    kaggle = _existing(READERS / "celeba" / "kaggle" / f"{stem}.csv",
                       samples / "kaggle_csv_variant_saggabbb" / f"{stem}.csv")
    targets = [Target(f"celeba {stem}", text, parse, file_name)]
    if kaggle:
        targets.append(Target(f"celeba {stem} (csv)", kaggle, parse, f"{stem}.csv"))
    return targets


def _folder_csv(path: Path) -> object:
    from data_prep.datasets.folder_csv import load_folder_csv

    return load_folder_csv(path.parent, csv_file=path.name)


def _lfwa(path: Path) -> object:
    from data_prep.datasets.textio import read_whitespace_table

    return read_whitespace_table(path, binary=True, what="attribute value", key=lambda n: Path(n).name)


def label_targets() -> list[Target]:
    """Every label-file parser with its seeds."""
    from data_prep.align.templates import load_template
    from data_prep.datasets.adience import read_adience_fold
    from data_prep.datasets.celeba import (
        read_celeba_attributes,
        read_celeba_bboxes,
        read_celeba_identities,
        read_celeba_landmarks,
        read_celeba_partition,
    )
    from data_prep.datasets.chalearn import read_fotw_labels, read_lap_labels
    from data_prep.datasets.folder_csv import read_schema_file
    from data_prep.datasets.lfw import read_columbia_attributes, read_gender_lists
    from data_prep.datasets.morph import read_morph_labels

    samples = _format_samples()
    lfw = READERS / "lfw"
    targets: list[Target] = []
    targets += _celeba("list_attr_celeba.txt", read_celeba_attributes,
                       "official/Anno/list_attr_celeba.txt", "no_count_lf/list_attr_celeba.txt")
    targets += _celeba("list_eval_partition.txt", read_celeba_partition,
                       "official/Eval/list_eval_partition.txt", "no_count_lf/list_eval_partition.txt")
    targets += _celeba("identity_CelebA.txt", read_celeba_identities,
                       "official/Anno/identity_CelebA.txt", "no_count_lf/identity_CelebA.txt")
    targets += _celeba("list_landmarks_align_celeba.txt", read_celeba_landmarks,
                       "official/Anno/list_landmarks_align_celeba.txt")
    targets += _celeba("list_bbox_celeba.txt", read_celeba_bboxes, "official/Anno/list_bbox_celeba.txt")
    targets += [
        Target("lfw male_names", [lfw / "male_names.txt"], lambda p: read_gender_lists(p, p.parent / "female_names.txt"),
               "male_names.txt", {"female_names.txt": lfw / "female_names.txt"}),
        Target("lfw female_names", [lfw / "female_names.txt"],
               lambda p: read_gender_lists(p.parent / "male_names.txt", p), "female_names.txt",
               {"male_names.txt": lfw / "male_names.txt"}),
        Target("lfw columbia attributes", [lfw / "lfw_attributes.txt"], read_columbia_attributes, "lfw_attributes.txt"),
        Target("lfwa attributes", [READERS / "lfwa" / "lfw_att_40.txt"], _lfwa, "lfw_att_40.txt"),
        Target("morph csv", _existing(READERS / "morph" / "whole_test.csv", samples / "morph2" / "whole_test.csv"),
               read_morph_labels, "whole_test.csv"),
        Target("morph protocol list", _existing(READERS / "morph" / "S1.txt", READERS / "morph" / "S2.txt",
                                                samples / "morph2" / "S1.txt"), read_morph_labels, "S1.txt"),
        Target("adience fold", sorted((READERS / "adience").glob("fold_*_data.txt"))
               + sorted((samples / "adience").glob("**/fold_*.txt")), read_adience_fold, "fold_0_data.txt"),
        Target("chalearn lap 2015", sorted((READERS / "chalearn" / "lap2015").glob("*.csv")), read_lap_labels, "Train.csv"),
        Target("chalearn lap 2016", sorted((READERS / "chalearn" / "lap2016").glob("*.csv")), read_lap_labels,
               "train_gt.csv"),
        Target("chalearn fotw", sorted((READERS / "chalearn" / "fotw").glob("*.csv")), read_fotw_labels, "train.csv"),
        Target("folder csv", [READERS / "folder_csv" / "basic" / "labels.csv"], _folder_csv, "labels.csv"),
        Target("folder csv with schema", [READERS / "folder_csv" / "lbs" / "labels.csv"], _folder_csv, "labels.csv",
               {"labels.schema.yaml": READERS / "folder_csv" / "lbs" / "labels.schema.yaml"}),
        Target("folder csv schema sidecar", [READERS / "folder_csv" / "lbs" / "labels.schema.yaml"],
               read_schema_file, "labels.schema.yaml"),
        Target("template csv", sorted((FIXTURES / "align").glob("*.csv")), load_template, "template.csv"),
        Target("template json", sorted((FIXTURES / "align").glob("*.json")), load_template, "template.json"),
        Target("template yaml", sorted((FIXTURES / "align").glob("*.yaml")), load_template, "template.yaml"),
    ]
    return [t for t in targets if t.seed_bytes()]


# ---------------------------------------------------------------------------------------------
# running


@dataclass
class Tally:
    """What the examples of one target did."""

    examples: int = 0
    parsed: int = 0
    refused: int = 0
    with_line: int = 0
    reasons: Counter = field(default_factory=Counter)


class ContractBroken(AssertionError):
    """A refusal that does not name its file."""


def check_file(target: Target, data: bytes, folder: Path, tally: Tally) -> None:
    """Write `data` as the target's file, parse it and hold the outcome to the contract."""
    path = folder / target.file_name
    path.write_bytes(data)
    tally.examples += 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            target.parse(path)
    except FaceganError as exc:
        message = str(exc)
        if path.name not in message:
            raise ContractBroken(f"{target.name}: the error does not name {path.name}: {message!r}") from exc
        line = getattr(exc, "line", None)
        if line is not None:
            if f"{path.name}:{line}" not in message:
                raise ContractBroken(f"{target.name}: the error has line {line} but does not say it: {message!r}")
            tally.with_line += 1
        tally.refused += 1
        tally.reasons[type(exc).__name__] += 1
        return
    tally.parsed += 1


def run_examples(strategy: st.SearchStrategy, check: Callable[[object], None], examples: int, derandomize: bool,
                 seed: int | None) -> None:
    """Hypothesis runs `check` on `examples` draws of `strategy`: derandomised (the same examples
    every time, as in CI) or from `seed`. No example database; a failure raises, shrunk."""
    @settings(max_examples=examples, derandomize=derandomize, database=None, deadline=None,
              suppress_health_check=list(HealthCheck), print_blob=False)
    @given(example=strategy)
    def run(example: object) -> None:
        check(example)

    if seed is not None and not derandomize:
        run = hypothesis.seed(seed)(run)
    run()


def fuzz_target(target: Target, examples: int, *, derandomize: bool = True, seed: int | None = None) -> Tally:
    """Run `examples` generated inputs through one target; a broken contract raises (shrunk)."""
    tally = Tally()
    seeds = target.seed_bytes()
    folder = Path(tempfile.mkdtemp(prefix="facegan-fuzz-"))
    try:
        for name, source in target.companions.items():
            shutil.copyfile(source, folder / name)
        run_examples(mutated(seeds), lambda data: check_file(target, data, folder, tally), examples, derandomize, seed)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return tally


# ---------------------------------------------------------------------------------------------
# images


def image_seeds() -> dict[str, bytes]:
    """Small images in every layout `load_rgb` claims to handle, made here (no dataset faces)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8), "RGB")

    def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, fmt, **options)
        return buffer.getvalue()

    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    sixteen = Image.fromarray(rng.integers(0, 65536, (20, 20), dtype=np.uint16))
    return {
        "rgb.jpg": encode(rgb, "JPEG", quality=90),
        "rgb.png": encode(rgb, "PNG"),
        "exif_rotated.jpg": encode(rgb, "JPEG", exif=exif.tobytes()),
        "cmyk.jpg": encode(rgb.convert("CMYK"), "JPEG"),
        "palette.png": encode(rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16), "PNG"),
        "palette_transparent.png": encode(rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16), "PNG",
                                          transparency=0),
        "gray16.png": encode(sixteen, "PNG"),
        "rgba.png": encode(rgb.convert("RGBA"), "PNG"),
        "one_by_one.png": encode(Image.new("RGB", (1, 1), (10, 20, 30)), "PNG"),
        "one_by_one.jpg": encode(Image.new("RGB", (1, 1), (10, 20, 30)), "JPEG"),
        "bilevel.png": encode(rgb.convert("1"), "PNG"),
        "float.tif": encode(Image.fromarray(rng.random((20, 20), dtype=np.float32)), "TIFF"),
        "bomb.png": decompression_bomb(),
        "rgb.gif": encode(rgb.convert("P"), "GIF"),
        "rgb.bmp": encode(rgb, "BMP"),
        "rgb.webp": encode(rgb, "WEBP"),
    }


def decompression_bomb(side: int = 10_000) -> bytes:
    """A valid PNG of side x side black pixels: about 100 kB on disk, 100M pixels (past PIL's limit) decoded.

    Built from compressed all-zero scanlines without ever holding the image in memory.
    """
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + side)  # filter byte + one byte per grey pixel
    body = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


@st.composite
def mutated_image(draw: st.DrawFn, seeds: dict[str, bytes]) -> tuple[str, bytes]:
    """(file name, bytes): a seed image, intact or damaged inside its header or its data."""
    name = draw(st.sampled_from(sorted(seeds)))
    data = seeds[name]
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["truncate", "flip", "insert", "delete", "header"]))
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if kind == "truncate":
            data = data[:at]
        elif kind == "flip":
            data = data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1:]
        elif kind == "insert":
            data = data[:at] + draw(st.binary(min_size=1, max_size=16)) + data[at:]
        elif kind == "delete":
            data = data[:at] + data[at + draw(st.integers(1, 64)):]
        else:  # damage the first 64 bytes, where the dimensions and format live
            at = draw(st.integers(0, min(63, len(data) - 1)))
            data = data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1:]
    return name, data


def fuzz_images(examples: int, *, derandomize: bool = True, seed: int | None = None) -> Tally:
    """Generated images through `load_rgb`: an HxWx3 uint8 array or an ImageLoadError naming the file."""
    import numpy as np

    from data_prep.images import ImageLoadError, load_rgb

    tally = Tally()
    seeds = image_seeds()
    folder = Path(tempfile.mkdtemp(prefix="facegan-fuzz-images-"))
    try:
        def check(example: tuple[str, bytes]) -> None:
            name, data = example
            path = folder / name
            path.write_bytes(data)
            tally.examples += 1
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    array = load_rgb(path, min_side=1)
            except ImageLoadError as exc:
                if path.name not in str(exc):
                    raise ContractBroken(f"image error does not name {path.name}: {exc}") from exc
                tally.refused += 1
                tally.reasons[exc.reason] += 1
                return
            if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
                raise ContractBroken(f"{name}: load_rgb returned {array.dtype} {array.shape}")
            tally.parsed += 1

        run_examples(mutated_image(seeds), check, examples, derandomize, seed)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return tally


def utkface_names() -> list[str]:
    return ["25_0_2_20170116174525125.jpg.chip.jpg", "1_1_0_20161219140623097.jpg.chip.jpg",
            "116_0_0_20170120134921760.jpg", "39_1_20170116174525125.jpg.chip.jpg"]


def fuzz_utkface_names(examples: int, *, derandomize: bool = True, seed: int | None = None) -> Tally:
    """UTKFace's name parser promises a 4-tuple or a ValueError saying why (the folder reader turns
    that into a skipped sample with the reason); anything else is a bug."""
    from data_prep.datasets.utkface import parse_utkface_name

    tally = Tally()
    seeds = [n.encode() for n in utkface_names()]

    def check(data: bytes) -> None:
        tally.examples += 1
        try:
            parse_utkface_name(data.decode("utf-8", errors="replace"))
        except ValueError as exc:
            tally.refused += 1
            tally.reasons[str(exc).split(" ")[0]] += 1
            return
        tally.parsed += 1

    run_examples(mutated(seeds), check, examples, derandomize, seed)
    return tally
