"""A real PACS for the tests: Debian's Orthanc with its DICOMweb plugin, on free loopback
ports, with a storage folder of its own.

``with OrthancServer() as orthanc:`` gives ``orthanc.dicomweb`` (the DICOMweb root URL),
``orthanc.dicom_port`` and ``orthanc.ae_title``; :meth:`OrthancServer.store` loads DICOM
files into it through its REST API (``POST /instances``), as an archive is filled by the
modalities, and :meth:`OrthancServer.send` makes it send a study to holo (C-STORE to the
modality ``holo``: ``holo_ae`` at 127.0.0.1:``holo_port``, where a test listens). The
package's own service is never started (``../shared/docs/CLIENTS.md``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from engines import free_port, missing

__all__ = ["OrthancServer"]

_ORTHANC = "/usr/sbin/Orthanc"
_DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
_START_TIMEOUT = 60.0  # seconds for Orthanc to answer (it builds its index first)


class OrthancServer:
    """Orthanc on free loopback ports (REST/DICOMweb and DIMSE)."""

    ae_title = "ORTHANC"

    def __init__(self, *, holo_port: int = 11112, holo_ae: str = "HOLO") -> None:
        self.holo_port = holo_port
        self.holo_ae = holo_ae
        self.http_port = 0
        self.dicom_port = 0
        self._folder = ""
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def rest(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def running(self) -> bool:
        """Started and not stopped (nor exited)."""
        return self._process is not None and self._process.poll() is None

    @property
    def dicomweb(self) -> str:
        return f"{self.rest}/dicom-web"

    def __enter__(self) -> OrthancServer:
        if not Path(_ORTHANC).exists() or not Path(_DICOMWEB_PLUGIN).exists():
            missing("Orthanc with its DICOMweb plugin (apt install orthanc orthanc-dicomweb)")
        self._folder = tempfile.mkdtemp(prefix="holo-orthanc-")
        self.http_port, self.dicom_port = free_port(), free_port()
        config = {
            "Name": "holo-test-pacs",
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.ae_title,
            "StorageDirectory": f"{self._folder}/storage",
            "IndexDirectory": f"{self._folder}/index",
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False,
            # holo is a known modality, as a hospital's PACS administrator would make it:
            # Orthanc answers C-FIND, C-GET and C-MOVE only from known callers.
            "DicomModalities": {"holo": [self.holo_ae, "127.0.0.1", self.holo_port]},
            "Plugins": [_DICOMWEB_PLUGIN],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        }
        Path(self._folder, "orthanc.json").write_text(json.dumps(config))
        self._launch()
        if not self._wait_ready():
            text = Path(self._folder, "orthanc.log").read_text(errors="replace")[-4000:]
            self._cleanup()
            raise RuntimeError(f"Orthanc did not answer:\n{text}")
        return self

    def _launch(self) -> None:
        with open(Path(self._folder, "orthanc.log"), "ab") as log:
            self._process = subprocess.Popen(
                [_ORTHANC, str(Path(self._folder, "orthanc.json"))],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def start(self) -> None:
        """Start it again after :meth:`stop`: the same ports, the same archive."""
        self._launch()
        if not self._wait_ready():
            raise RuntimeError("Orthanc did not come back")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{self.rest}/system", timeout=2):
                    return True
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        return False

    def store(self, files: Iterable[Path]) -> int:
        """Load DICOM files (``POST /instances``); how many Orthanc took."""
        count = 0
        for path in files:
            request = urllib.request.Request(
                f"{self.rest}/instances", data=path.read_bytes(), method="POST"
            )
            with urllib.request.urlopen(request, timeout=30) as reply:
                json.load(reply)
            count += 1
        return count

    def study_id(self, study_uid: str) -> str:
        """Orthanc's id of the study with this StudyInstanceUID."""
        body = json.dumps({"Level": "Study", "Query": {"StudyInstanceUID": study_uid}})
        request = urllib.request.Request(f"{self.rest}/tools/find", data=body.encode())
        with urllib.request.urlopen(request, timeout=30) as reply:
            [found] = json.load(reply)
        return str(found)

    def send(self, study_uid: str) -> dict[str, object]:
        """C-STORE the study to the modality ``holo`` (``POST /modalities/holo/store``), as
        a PACS forwards a study; Orthanc's answer (it raises on a failed send)."""
        request = urllib.request.Request(
            f"{self.rest}/modalities/holo/store", data=self.study_id(study_uid).encode()
        )
        with urllib.request.urlopen(request, timeout=120) as reply:
            answer: dict[str, object] = json.load(reply)
        return answer

    def stop(self, *, kill: bool = False) -> None:
        """Stop it: gracefully (SIGTERM: Orthanc finishes the transfers it is running), or
        with ``kill`` at once (SIGKILL: an archive that goes away mid-transfer)."""
        if self._process is not None and self._process.poll() is None:
            if kill:
                self._process.kill()
            else:
                self._process.terminate()
            try:
                self._process.wait(20)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(10)
        self._process = None

    def _cleanup(self) -> None:
        self.stop()
        if self._folder:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = ""

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._cleanup()
