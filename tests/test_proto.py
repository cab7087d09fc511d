"""The wire contract: committed generated code is current, and the messages behave."""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

import pytest
from google.protobuf.descriptor import Descriptor, EnumDescriptor

import holo.v1
from holo.v1 import common_pb2

REPO_ROOT = Path(__file__).resolve().parent.parent
GENERATE = REPO_ROOT / "proto" / "generate.py"

#: Every file proto/generate.py owns, as globs relative to an output root.
GENERATED_GLOBS = (
    "holo/v1/__init__.py",
    "holo/v1/*_pb2.py",
    "holo/v1/*_pb2.pyi",
    "holo/v1/*_pb2_grpc.py",
    "unity_bridge/Runtime/Generated/*.cs",
    "holo/web/src/gen/holo/v1/*_pb.js",
)


def _generated_files(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for pattern in GENERATED_GLOBS
        for path in root.glob(pattern)
    }


def test_committed_generated_code_matches_the_generator(tmp_path: Path) -> None:
    out = tmp_path / "out"
    # Run from an unrelated directory: the script must not depend on the cwd.
    result = subprocess.run(
        [sys.executable, str(GENERATE), "--out", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"proto/generate.py failed:\n{result.stderr}"

    fresh = _generated_files(out)
    committed = _generated_files(REPO_ROOT)
    for expected in (
        "holo/v1/__init__.py",
        "holo/v1/common_pb2.py",
        "holo/v1/common_pb2.pyi",
        "unity_bridge/Runtime/Generated/Common.cs",
    ):
        assert expected in fresh, f"proto/generate.py did not write {expected}"

    missing = sorted(fresh.keys() - committed.keys())
    stale = sorted(committed.keys() - fresh.keys())
    changed = sorted(
        name for name in fresh.keys() & committed.keys() if fresh[name] != committed[name]
    )
    assert not (missing or stale or changed), (
        "generated code differs from proto/holo/v1/*.proto "
        f"(not committed: {missing}, no longer generated: {stale}, changed: {changed}); "
        "run `make proto` and commit the result"
    )


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("holo_proto_generate", GENERATE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pins_agree_with_pyproject() -> None:
    generator = _load_generator()
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]

    dev = project["optional-dependencies"]["dev"]
    assert f"grpcio-tools=={generator.GRPCIO_TOOLS_PIN}" in dev, (
        "proto/generate.py and pyproject.toml's dev extra pin different grpcio-tools"
    )
    # The runtime floor is the gencode version the generated modules check for at import.
    gencode = re.search(
        r"^# Protobuf Python Version: (\d+)\.(\d+)\.(\d+)$",
        (REPO_ROOT / "holo/v1/common_pb2.py").read_text(encoding="utf-8"),
        re.MULTILINE,
    )
    assert gencode is not None, "holo/v1/common_pb2.py names no gencode version"
    major, minor, patch = gencode.groups()
    assert f"{minor}.{patch}" == generator.PROTOC_PIN
    expected = f"protobuf>={major}.{minor}.{patch},<{int(major) + 1}"
    assert expected in project["dependencies"], (
        f"pyproject.toml should require {expected!r} to match the generated code"
    )


def test_pose_round_trips_through_the_wire_format() -> None:
    pose = common_pb2.Pose(
        # 0.1 and 1/3 are not float32-representable: this also checks the fields are doubles.
        position=common_pb2.Vec3(x=0.1, y=-1.25, z=1 / 3),
        rotation=common_pb2.Quat(x=0.0, y=0.7071067811865476, z=0.0, w=0.7071067811865476),
    )

    data = pose.SerializeToString()
    decoded = common_pb2.Pose.FromString(data)

    assert data
    assert decoded == pose
    assert (decoded.position.x, decoded.position.y, decoded.position.z) == (0.1, -1.25, 1 / 3)
    assert decoded.rotation.w == 0.7071067811865476
    assert decoded.HasField("rotation")
    assert not common_pb2.Pose.FromString(b"").HasField("rotation")


def _all_enums() -> list[EnumDescriptor]:
    """Every enum, top-level or nested, of every generated holo.v1 module."""
    enums: list[EnumDescriptor] = []

    def walk_messages(messages: Iterable[Descriptor]) -> None:
        for message in messages:
            enums.extend(message.enum_types)
            walk_messages(message.nested_types)

    for module_info in pkgutil.iter_modules(holo.v1.__path__):
        if not module_info.name.endswith("_pb2"):
            continue
        descriptor = importlib.import_module(f"holo.v1.{module_info.name}").DESCRIPTOR
        enums.extend(descriptor.enum_types_by_name.values())
        walk_messages(descriptor.message_types_by_name.values())
    return enums


ENUMS = _all_enums()


def test_enums_are_found() -> None:
    # Guards the parametrized test below against passing on an empty list.
    assert "holo.v1.Frame" in {enum.full_name for enum in ENUMS}


@pytest.mark.parametrize("enum", ENUMS, ids=lambda enum: enum.full_name)
def test_enum_value_zero_is_unspecified(enum: EnumDescriptor) -> None:
    zero = enum.values_by_number.get(0)
    assert zero is not None, f"{enum.full_name} has no value 0"
    assert zero.name.endswith("_UNSPECIFIED"), (
        f"{enum.full_name} value 0 is {zero.name}; enums start with <ENUM_NAME>_UNSPECIFIED = 0"
    )
