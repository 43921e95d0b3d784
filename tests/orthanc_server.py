"""A real Orthanc DICOM server for tests: started on free loopback ports with its own storage.

Debian's ``orthanc`` and ``orthanc-dicomweb`` packages provide it (``.ci/run`` installs them).
Without them the tests skip with the reason, except in CI (``CI`` set), where they fail: the
PACS round trip must be proven there.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

USER, PASSWORD = "xaimed", "orthanc-test-secret"
AET, OUR_AET = "ORTHANC", "XAIMEDTEST"
PLUGIN_DIRS = [Path("/usr/share/orthanc/plugins"), Path("/usr/lib/orthanc/plugins")]


def _plugin() -> Path | None:
    for folder in PLUGIN_DIRS:
        found = sorted(folder.glob("libOrthancDicomWeb.so*")) if folder.is_dir() else []
        if found:
            return found[0]
    return None


def require_orthanc() -> tuple[str, Path]:
    """The Orthanc binary and its DICOMweb plugin, or a skip (a failure in CI) saying why."""
    binary, plugin = shutil.which("Orthanc"), _plugin()
    if binary and plugin:
        return binary, plugin
    reason = (
        "Orthanc with its DICOMweb plugin is not installed "
        "(apt-get install orthanc orthanc-dicomweb)"
    )
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def free_port() -> int:
    """A TCP port nothing listens on now (loopback)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Orthanc:
    """One Orthanc process; ``stop()`` and ``start()`` keep its storage, like a restart."""

    def __init__(self, folder: Path) -> None:
        self.binary, plugin = require_orthanc()
        self.folder = folder
        self.http_port, self.dicom_port, self.move_port = free_port(), free_port(), free_port()
        storage = folder / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        self.config = folder / "orthanc.json"
        self.config.write_text(json.dumps({
            "Name": "xaimed-test", "StorageDirectory": str(storage),
            "IndexDirectory": str(storage), "HttpPort": self.http_port,
            "DicomPort": self.dicom_port, "DicomAet": AET, "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True, "RegisteredUsers": {USER: PASSWORD},
            "DicomModalities": {"xaimed": [OUR_AET, "127.0.0.1", self.move_port]},
            "DicomAlwaysAllowEcho": True, "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowFind": True, "DicomAlwaysAllowGet": True,
            "DicomCheckCalledAet": False, "Plugins": [str(plugin)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}, "HttpThreadsCount": 8,
        }))  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        """The DICOMweb root."""
        return f"http://127.0.0.1:{self.http_port}/dicom-web"

    def start(self) -> None:
        """Start (or restart) the server and wait until it answers."""
        log = (self.folder / "orthanc.log").open("ab")
        self.process = subprocess.Popen(
            [self.binary, str(self.config)], stdout=log, stderr=log, cwd=self.folder
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if self.rest("get", "/system").ok:
                    return
            except requests.ConnectionError:
                pass
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"Orthanc did not start; see {self.folder / 'orthanc.log'}")

    def stop(self) -> None:
        """Stop the server (its storage stays)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def rest(self, method: str, path: str, **kwargs) -> requests.Response:
        """A call to Orthanc's own REST API, authenticated."""
        return requests.request(
            method, f"http://127.0.0.1:{self.http_port}{path}", auth=(USER, PASSWORD),
            timeout=30, **kwargs,
        )  # fmt: skip

    def upload(self, files: list[Path]) -> None:
        """Store DICOM files through the REST API."""
        for path in files:
            response = self.rest("post", "/instances", data=path.read_bytes())
            response.raise_for_status()

    def count(self, what: str = "instances") -> int:
        """How many instances (or series, studies) the server holds."""
        return len(self.rest("get", f"/{what}").json())

    def dicomweb(self, **extra) -> dict:
        """A ``pacs.server`` config for DICOMweb with basic auth from the environment."""
        return {"protocol": "dicomweb", "url": self.url, "credentials": {"auth": "basic"},
                "retries": 1, "backoff_s": 0.1, "timeout_s": 20} | extra  # fmt: skip

    def dimse(self, retrieve: str = "get", **extra) -> dict:
        """A ``pacs.server`` config for DIMSE (C-GET, or C-MOVE to our storage SCP)."""
        server = {"protocol": "dimse", "host": "127.0.0.1", "port": self.dicom_port,
                  "called_aet": AET, "calling_aet": OUR_AET, "retrieve": retrieve,
                  "retries": 1, "backoff_s": 0.1, "timeout_s": 20}  # fmt: skip
        if retrieve == "move":
            server["move_port"] = self.move_port
        return server | extra
