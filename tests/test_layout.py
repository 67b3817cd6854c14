"""The dependency rule of shared/ARCHITECTURE.md, checked on the source: wings import only downwards, the pure
wings never import Ray, and no module grows past what a reader holds in mind."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "captioner"
# What each wing may import of ours, besides itself.
FLOORS = {
    "config": set(),
    "schema": set(),
    "langid": set(),
    "fingerprint": {"config"},
    "store": {"config", "schema"},
    "media": {"config"},
    "models": {"config", "schema", "media", "store"},
    "run": {"config", "schema", "langid", "fingerprint", "store", "media", "models"},
    "train": {"config", "store", "media", "models"},
    "query": {"config", "schema", "store"},
    "export": set(),
    "report": {"config", "schema", "store", "query", "media"},
    "submit": {"config", "fingerprint", "store"},
    "cli": {"config", "schema", "fingerprint", "store", "run", "train", "query", "export", "report", "submit"},
}
NO_RAY = {"config", "schema", "langid", "fingerprint", "store", "media", "models", "query", "export", "report"}


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py"))


def _wing(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def _imports(path: Path) -> list[str]:
    """Absolute dotted names this module imports (relative imports resolved), functions' bodies included."""
    package = ".".join(("captioner", *path.relative_to(PACKAGE).parent.parts))
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join([*base, node.module] if node.module else base)
            names += [module] + [f"{module}.{alias.name}" for alias in node.names]
    return names


def test_wings_import_only_downwards():
    upward = []
    for path in _modules():
        wing = _wing(path)
        if wing == "__init__":
            continue
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] == "captioner" and len(parts) > 1 and parts[1] in FLOORS:
                if parts[1] != wing and parts[1] not in FLOORS[wing]:
                    upward.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert not upward


def test_pure_wings_never_import_ray():
    found = [f"{p.relative_to(PACKAGE)}: {n}" for p in _modules() if _wing(p) in NO_RAY
             for n in _imports(p) if n.split(".")[0] == "ray"]
    assert not found


def test_modules_stay_small():
    assert {str(p.relative_to(PACKAGE)): n for p in _modules() if (n := len(p.read_text().splitlines())) > 250} == {}
