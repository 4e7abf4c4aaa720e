"""The package's tree is its architecture: every import points down, no private name crosses a
module, and files stay small enough to read top to bottom."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "vfm_course"

# Lowest first. A module may import from its own subpackage or from any lower one; never up.
# data and train come before the model layers because they know nothing about models (fit takes
# any nn.Module); eval sits above dense because dense metrics need box geometry.
LAYERS = ("core", "data", "train", "layers", "models", "objectives", "dense", "eval", "recipes",
          "course")  # fmt: skip
MAX_LINES = 340  # "about 300": one concept a newcomer can name, read top to bottom


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str | None:
    """'vfm_course.models.vit' -> 'models'; the package's own __init__ is the front door."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def imports(path: Path, me: str | None = None) -> list[tuple[int, str, list[str]]]:
    """(line, absolute module, imported names) for every import in ``path``, at any depth;
    ``me`` is the module's dotted name (by default found from where the file is)."""
    me = me or module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names = [a.name for a in node.names]
            if module.startswith("vfm_course"):
                # `from . import distributed` imports a module, not a name
                folder = PACKAGE.parent.joinpath(*module.split("."))
                submodules = [n for n in names if (folder / f"{n}.py").exists()]
                for n in submodules:
                    out.append((node.lineno, f"{module}.{n}", []))
                rest = [n for n in names if n not in submodules]
                if rest:
                    out.append((node.lineno, module, rest))
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("vfm_course"):
                    out.append((node.lineno, a.name, []))
    return out


def violations(path: Path, me: str | None = None) -> list[str]:
    me = me or module_name(path)
    mine = layer_of(me)
    found = []
    for line, target, names in imports(path, me):
        theirs = layer_of(target)
        where = f"{me}:{line}"
        if mine is not None and theirs is None:
            found.append(f"{where}: imports the front door {target} (import the module instead)")
        elif theirs not in LAYERS or mine not in (None, *LAYERS):
            found.append(f"{where}: {target} is in no layer")
        elif mine is not None and LAYERS.index(theirs) > LAYERS.index(mine):
            found.append(f"{where}: {mine} imports {target}, which is above it")
        private = [n for n in names if n.startswith("_") and n != "__version__"]
        if private and target != me:
            found.append(f"{where}: imports private {private} from {target}")
    return found


def test_every_subpackage_is_a_known_layer() -> None:
    subpackages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert subpackages == set(LAYERS)


def test_imports_point_down_and_private_names_stay_home() -> None:
    found = [v for path in sorted(PACKAGE.rglob("*.py")) for v in violations(path)]
    assert not found, "\n".join(found)


def test_the_check_catches_an_import_that_points_up(tmp_path: Path) -> None:
    # A module that would sit at vfm_course/layers/bad.py, kept outside the package.
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from ..models.vit import VisionTransformer\n"
        "from .attention import _check_qkv\n"
        "def f():\n    from vfm_course.course.viz import show_images\n"
    )
    found = violations(bad, "vfm_course.layers.bad")
    assert any("layers imports vfm_course.models.vit" in v for v in found), found
    assert any("layers imports vfm_course.course.viz" in v for v in found), found  # nested too
    assert any("private ['_check_qkv']" in v for v in found), found
    assert len(found) == 3, found


@pytest.mark.parametrize(
    "path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE))
)
def test_files_stay_readable(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.name} has {lines} lines; split it by concept"
