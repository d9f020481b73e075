"""The house rules, checked: the import direction (import-linter contracts), CLI modules that only
parse, no private names across modules, no line wider than 135 characters, no citations of
documents users do not have, and a built wheel that runs from any folder with the presets it ships."""
from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("engine", "data_prep", "gan", "attributes", "transfer")


def _sources():
    for package in PACKAGES:
        yield from sorted((ROOT / package).rglob("*.py"))


def _imports(path: Path):
    """(module imported, names imported from it) of every import statement in `path`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, [alias.name for alias in node.names]


def _lint_imports(project: Path) -> subprocess.CompletedProcess:
    """lint-imports over the packages in `project`, with its pyproject's contracts."""
    env = {**os.environ, "PYTHONPATH": str(project)}
    code = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True))"
    return subprocess.run([sys.executable, "-c", code], cwd=project, env=env, capture_output=True, text=True, timeout=300)


def test_the_import_contracts_hold():
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


@pytest.mark.parametrize("where, planted, broken", [
    ("gan/losses.py", "import attributes.config", "gan and attributes are independent"),
    ("data_prep/sources.py", "import gan.losses", "layers: engine <- data_prep <- gan, attributes <- transfer"),
])
def test_a_planted_forbidden_import_breaks_a_contract(tmp_path, where, planted, broken):
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__", "presets"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / where
    target.write_text(target.read_text() + f"\n{planted}  # planted by the test\n")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    assert f"{broken} BROKEN" in result.stdout, result.stdout


def test_only_the_facegan_root_imports_cli_modules_and_only_cli_modules_parse():
    offenders = []
    for path in _sources():
        relative = path.relative_to(ROOT).as_posix()
        for module, _ in _imports(path):
            if module.endswith(".cli") or module == "cli" or ".cli." in module:
                if relative != "transfer/cli.py":
                    offenders.append(f"{relative} imports {module}")
            if module == "argparse" and path.name != "cli.py":
                offenders.append(f"{relative} imports argparse")
        if path.name.startswith("sr_") or path.name.endswith("_cli.py"):
            offenders.append(f"{relative}: a family prefix or a _cli suffix in a file name")
    assert not offenders, "\n".join(offenders)


def test_no_private_name_is_imported_across_modules():
    offenders = [f"{path.relative_to(ROOT)}: from {module} import {name}"
                 for path in _sources() for module, names in _imports(path)
                 if module.split(".")[0] in PACKAGES for name in names if name.startswith("_") and not name.startswith("__")]
    assert not offenders, "\n".join(offenders)


def test_no_package_line_runs_past_the_house_width():
    # 135 characters: what a side-by-side diff shows without wrapping; longer lines hid options and
    # conditions from readers of the package.
    offenders = [f"{path.relative_to(ROOT)}:{number}: {len(line)} characters"
                 for path in _sources() for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                 if len(line) > 135]
    assert not offenders, "\n".join(offenders)


def test_no_citation_of_documents_users_do_not_have():
    # The package cites the thesis and the papers by author, title and year, never our own notes.
    pattern = re.compile(r"\bSPEC\b|\bseed 0\d\d\b|shared/seeds|\bissue[- ]\d+\b")
    files = [*_sources(), ROOT / "README.md", *ROOT.glob("*/presets/*.yaml"), *ROOT.glob("gan/*/presets/*.yaml")]
    offenders = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}" for path in files
                 for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert not offenders, "\n".join(offenders)


def _celeba_folder(root: Path, people: int = 16, per_person: int = 2) -> Path:
    """A small folder in CelebA's own layout (labels, identities, partition, landmarks of the
    aligned crops), so that its faces align from the given landmarks without detection."""
    from PIL import Image

    from data_prep.datasets.celeba import CELEBA_ATTRIBUTES

    images = root / "img_align_celeba"
    images.mkdir(parents=True)
    names = [f"{i + 1:06d}.jpg" for i in range(people * per_person)]
    attributes, identities, partition, landmarks = [], [], [], []
    for i, name in enumerate(names):
        Image.new("RGB", (178, 218), (40 + 5 * i, 90 + 3 * i, 150)).save(images / name)
        attributes.append(name + " " + " ".join("1" if (i + k) % 3 == 0 else "-1" for k in range(len(CELEBA_ATTRIBUTES))))
        identities.append(f"{name} {i // per_person + 1}")
        partition.append(f"{name} 0")
        landmarks.append(f"{name} 69 109 106 113 77 142 73 152 108 154")
    (root / "list_attr_celeba.txt").write_text(f"{len(names)}\n{' '.join(CELEBA_ATTRIBUTES)}\n" + "\n".join(attributes) + "\n")
    (root / "identity_CelebA.txt").write_text("\n".join(identities) + "\n")
    (root / "list_eval_partition.txt").write_text("\n".join(partition) + "\n")
    (root / "list_landmarks_align_celeba.txt").write_text(
        f"{len(names)}\nlefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x "
        "rightmouth_y\n" + "\n".join(landmarks) + "\n")
    return root


@pytest.mark.slow
def test_a_built_wheel_runs_the_shipped_presets_from_an_empty_folder(tmp_path):
    """`pip install .` (not editable), then `--config NAME` from a folder outside the checkout."""
    wheels, site, work, source = tmp_path / "wheels", tmp_path / "site", tmp_path / "empty", tmp_path / "source"
    work.mkdir()
    # Built from a copy of what is tracked, so that no build/ folder lands in the checkout.
    for package in PACKAGES:
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", str(source), "--no-deps", "--no-build-isolation", "-w", str(wheels)], check=True,
                   capture_output=True, timeout=600)
    wheel = next(wheels.glob("facegan-0.2.0-*.whl"))
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True, capture_output=True,
                   timeout=600)
    env = {**os.environ, "PYTHONPATH": str(site), "FACEGAN_THREADS": "1"}
    env.pop("FACEGAN_DATA", None)

    def facegan(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "transfer.cli", *argv], cwd=work, env=env, capture_output=True,
                              text=True, timeout=600)

    where = subprocess.run([sys.executable, "-c", "import engine, gan.generators; print(engine.__file__)"], cwd=work,
                           env=env, capture_output=True, text=True, timeout=120)
    assert where.stdout.startswith(str(site)), where.stdout + where.stderr  # the wheel's copy, not the checkout
    listed = facegan("gan", "train", "--help")
    assert "dcgan64-cpu" in listed.stdout and "began64-fast" in listed.stdout

    gan = facegan("gan", "train", "--config", "dcgan64-cpu", "--steps", "2", "--out", "x", "--batch-size", "8",
                  "--set", "data.synthetic_identities=8", "--set", "trainer.progress=false")
    assert gan.returncode == 0, gan.stderr[-3000:]
    assert (work / "x" / "checkpoints" / "latest.pt").is_file()

    celeba = _celeba_folder(tmp_path / "celeba")
    attributes = facegan("attributes", "train", "--config", "celeba64", "--dataset", f"celeba={celeba}", "--steps", "2",
                         "--batch-size", "8", "--set", "trainer.progress=false", "--set", "trainer.eval_every=2")
    assert attributes.returncode == 0, attributes.stderr[-3000:]
    assert (work / "runs" / "attributes" / "celeba64" / "checkpoints" / "latest.pt").is_file()
    assert (work / "runs" / "attributes" / "celeba64" / "cache").is_dir()  # the cache went under the run's folder


def test_the_worked_example_in_the_architecture_page_trains(tmp_path, monkeypatch):
    """docs/architecture.md's "How to add a model family" runs as printed (fewer steps)."""
    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", page, flags=re.S)
    example = next(block for block in blocks if "class AutoencoderStep" in block)
    monkeypatch.chdir(tmp_path)
    code = example.replace("max_steps=200", "max_steps=3").replace(
        "TrainerConfig(out_dir", "TrainerConfig(progress=False, tensorboard=False, threads=1, out_dir")
    exec(compile(code, "docs/architecture.md", "exec"), {"__name__": "architecture_example"})
    from engine.checkpoint import load_checkpoint

    assert load_checkpoint(tmp_path / "runs" / "autoencoder" / "checkpoints" / "latest.pt")["global_step"] == 3


def test_the_architecture_page_answers_the_newcomer_questions():
    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    for named in ("gan/sr/models.py", "engine/trainer.py", "engine/checkpoint.py", "data_prep/datasets/registry.py"):
        assert named in page and (ROOT / named).is_file(), named


def test_no_module_imports_itself_through_others():
    """No circles: every import, at module level or inside a function, points one way."""
    import grimp

    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    modules = sorted(graph.modules)
    index, low, on_stack, stack, circles = {}, {}, set(), [], []

    def visit(module):  # Tarjan's strongly connected components
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(modules)))
    for module in modules:
        if module not in index:
            visit(module)
    assert not circles, circles
