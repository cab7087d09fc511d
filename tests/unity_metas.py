"""Unity ``.meta`` files for the package in ``unity_bridge/``.

A package installed from a git URL is immutable in Unity, and Unity ignores every asset of
an immutable package that has no ``.meta`` beside it ("has no meta file, but it's in an
immutable folder"), so each file and folder of the package carries one. Their GUIDs are
derived from the asset's path (MD5 of ``org.holo.bridge/<path>``): stable across runs and
machines, unique within the package. ``Samples~`` is skipped: Unity does not import
folders ending in ``~`` (a sample gets its meta files when it is copied into Assets).

``python tests/unity_metas.py`` writes the missing ones (after adding a file, or after
``make proto`` adds a generated message file); ``tests/test_unity_core.py`` checks that
every asset has one and that none is left over.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "unity_bridge"
PACKAGE_NAME = "org.holo.bridge"

_TAIL = """  externalObjects: {{}}
{extra}  userData: 
  assetBundleName: 
  assetBundleVariant: 
"""  # noqa: W291 (Unity writes these keys with a trailing space)

_MONO = """  serializedVersion: 2
  defaultReferences: []
  executionOrder: 0
  icon: {instanceID: 0}
"""


def guid(relative: str) -> str:
    return hashlib.md5(f"{PACKAGE_NAME}/{relative}".encode()).hexdigest()


def importer(path: Path) -> tuple[str, str]:
    """The importer Unity uses for ``path``, and the lines it adds before ``userData``."""
    if path.is_dir():
        return "DefaultImporter", ""
    if path.suffix == ".cs":
        return "MonoImporter", _MONO
    if path.suffix == ".asmdef":
        return "AssemblyDefinitionImporter", ""
    if path.name == "package.json":
        return "PackageManifestImporter", ""
    if path.suffix in (".md", ".json", ".xml", ".txt"):
        return "TextScriptImporter", ""
    return "DefaultImporter", ""


def meta_text(path: Path) -> str:
    relative = path.relative_to(PACKAGE).as_posix()
    name, extra = importer(path)
    folder = "folderAsset: yes\n" if path.is_dir() else ""
    head = f"fileFormatVersion: 2\nguid: {guid(relative)}\n{folder}{name}:\n"
    return head + _TAIL.format(extra=extra)


def assets() -> list[Path]:
    """Every file and folder of the package Unity imports (not metas, not ``~`` folders)."""
    found = []
    for path in sorted(PACKAGE.rglob("*")):
        parts = path.relative_to(PACKAGE).parts
        if any(p.endswith("~") or p.startswith(".") for p in parts) or path.suffix == ".meta":
            continue
        found.append(path)
    return found


def write_missing() -> list[Path]:
    written = []
    for path in assets():
        meta = path.with_name(path.name + ".meta")
        if not meta.exists():
            meta.write_text(meta_text(path), encoding="utf-8")
            written.append(meta)
    return written


if __name__ == "__main__":
    for meta in write_missing():
        print(meta.relative_to(PACKAGE.parent))
    sys.exit(0)
