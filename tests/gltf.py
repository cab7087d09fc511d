"""Run the Khronos glTF validator on GLB files from tests.

The validator is the npm package pinned in ``tests/gltf_validator/package.json`` and installed
by ``make`` (``npm ci --prefix tests/gltf_validator``); ``validate.mjs`` beside it prints the
validator's report for each file. A test that needs it calls :func:`ensure_validator` (done by
:func:`validate_glb`), which fails in CI (``CI=true``) and skips elsewhere when Node.js or the
package is missing, the same rule as the ``shared_data`` fixture in ``conftest.py``.

Also here: :func:`split_glb` and :func:`pack_glb`, to read or edit the JSON chunk of a GLB.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
from collections.abc import Collection
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "SEVERITY_ERROR",
    "assert_valid_glb",
    "ensure_validator",
    "error_messages",
    "pack_glb",
    "split_glb",
    "validate_glb",
    "validator_dir",
]

# Severities as the validator reports them (issues.messages[].severity).
SEVERITY_ERROR, SEVERITY_WARNING, SEVERITY_INFO, SEVERITY_HINT = 0, 1, 2, 3

# Node start-up plus validation is ~0.2 s for a small mesh; a full-resolution bone mesh of a few
# million triangles takes seconds. The limit only stops a hung process.
DEFAULT_TIMEOUT_S = 300.0

# Error messages listed per file in an assertion; the count is always given in full.
_MAX_LISTED = 20

_GLB_MAGIC = b"glTF"
_CHUNK_JSON = 0x4E4F534A  # "JSON" little-endian
_CHUNK_BIN = 0x004E4942  # "BIN\0" little-endian


def validator_dir() -> Path:
    """``tests/gltf_validator``: ``package.json``, ``validate.mjs`` and, once installed,
    ``node_modules/gltf-validator``."""
    return Path(__file__).resolve().parent / "gltf_validator"


def _missing_validator() -> str | None:
    """What is missing to run the validator, as a message with the fix; ``None`` if nothing."""
    install = f"npm ci --prefix {validator_dir()}"
    if shutil.which("node") is None:
        return f"Node.js (`node`) not found on PATH; the glTF validator needs it, then `{install}`"
    package = validator_dir() / "node_modules" / "gltf-validator" / "package.json"
    if not package.is_file():
        return f"glTF validator not installed ({package.parent} missing); run `make` or `{install}`"
    return None


def ensure_validator() -> None:
    """Fail the test in CI (``CI=true``), skip it elsewhere, if the validator cannot run."""
    message = _missing_validator()
    if message is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def validate_glb(
    *paths: str | os.PathLike[str], timeout: float = DEFAULT_TIMEOUT_S
) -> list[dict[str, Any]]:
    """Validate GLB files with one ``node validate.mjs`` run.

    Parameters
    ----------
    paths
        GLB files. Any bytes are accepted: empty or truncated files come back as reports with
        GLB errors, not as exceptions.
    timeout
        Seconds before the node process is killed.

    Returns
    -------
    list of dict
        The validator's reports, in the order of ``paths``: ``issues`` (``numErrors``,
        ``numWarnings``, ``numInfos``, ``numHints``, ``messages`` with ``code``, ``severity``,
        ``message`` and ``pointer`` or ``offset``) and, when the JSON could be parsed, ``info``
        (``drawCallCount``, ``totalTriangleCount``, ``totalVertexCount``, ``extensionsUsed``, ...).

    Raises
    ------
    RuntimeError
        If a file cannot be read, or the validator fails to run; the message holds its stderr.
    """
    if not paths:
        raise ValueError("validate_glb needs at least one path")
    ensure_validator()
    files = [os.fspath(p) for p in paths]
    node = shutil.which("node")
    assert node is not None  # ensure_validator checked
    command = [node, str(validator_dir() / "validate.mjs"), "--", *files]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as err:
        raise RuntimeError(f"glTF validator timed out after {timeout} s on {files}") from err
    if done.returncode != 0:
        raise RuntimeError(
            f"glTF validator exited with {done.returncode} on {files}: {done.stderr.strip()}"
        )
    reports = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    if len(reports) != len(files):
        raise RuntimeError(
            f"glTF validator printed {len(reports)} report(s) for {len(files)} file(s); "
            f"stderr: {done.stderr.strip()}"
        )
    return reports


def error_messages(
    report: dict[str, Any], allow_codes: Collection[str] = ()
) -> list[dict[str, Any]]:
    """The error-severity messages of one report whose code is not in ``allow_codes``."""
    return [
        m
        for m in report["issues"]["messages"]
        if m["severity"] == SEVERITY_ERROR and m["code"] not in allow_codes
    ]


def _describe(message: dict[str, Any]) -> str:
    where = message.get("pointer", f"byte {message['offset']}" if "offset" in message else "-")
    return f"{message['code']} at {where}: {message['message']}"


def assert_valid_glb(
    *paths: str | os.PathLike[str], allow_codes: Collection[str] = ()
) -> list[dict[str, Any]]:
    """Assert that the validator finds no error in any of ``paths``; return the reports.

    Parameters
    ----------
    paths
        GLB files, validated in one node run.
    allow_codes
        Error codes to tolerate (e.g. ``{"ACCESSOR_INDEX_TRIANGLE_DEGENERATE"}``); say why at the
        call site. Warnings, infos and hints never fail.

    Raises
    ------
    AssertionError
        Listing, per failing file, the error count and each error's code, JSON pointer (or byte
        offset) and message.
    """
    reports = validate_glb(*paths)
    failures = []
    for report in reports:
        errors = error_messages(report, allow_codes)
        if not errors:
            continue
        # numErrors counts every error; the listed ones skip the allowed codes.
        lines = [f"{report['uri']}: {report['issues']['numErrors']} glTF validator error(s)"]
        lines += [f"  {_describe(m)}" for m in errors[:_MAX_LISTED]]
        if len(errors) > _MAX_LISTED:
            lines.append(f"  ... and {len(errors) - _MAX_LISTED} more")
        failures.append("\n".join(lines))
    assert not failures, "\n".join(failures)
    return reports


def split_glb(data: bytes) -> tuple[dict[str, Any], bytes]:
    """Split a well-formed GLB into its JSON document and BIN chunk (``b""`` if none)."""
    magic, version, length = struct.unpack_from("<4sII", data, 0)
    if magic != _GLB_MAGIC or version != 2 or length != len(data):
        raise ValueError(f"not a GLB 2.0 container: magic {magic!r}, version {version}")
    json_length, json_type = struct.unpack_from("<II", data, 12)
    if json_type != _CHUNK_JSON:
        raise ValueError("first GLB chunk is not JSON")
    document = json.loads(data[20 : 20 + json_length])
    offset = 20 + json_length
    binary = b""
    if offset < len(data):
        bin_length, bin_type = struct.unpack_from("<II", data, offset)
        if bin_type != _CHUNK_BIN:
            raise ValueError("second GLB chunk is not BIN")
        binary = data[offset + 8 : offset + 8 + bin_length]
    return document, binary


def pack_glb(document: dict[str, Any], binary: bytes = b"") -> bytes:
    """Build a GLB 2.0 container: chunk lengths padded to 4 bytes as the spec requires, the
    JSON with spaces and the BIN chunk with zeros; no BIN chunk when ``binary`` is empty."""
    text = json.dumps(document, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 4)
    chunks = struct.pack("<II", len(text), _CHUNK_JSON) + text
    if binary:
        padded = binary + b"\0" * (-len(binary) % 4)
        chunks += struct.pack("<II", len(padded), _CHUNK_BIN) + padded
    return struct.pack("<4sII", _GLB_MAGIC, 2, 12 + len(chunks)) + chunks
