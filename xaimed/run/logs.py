"""Log set-up of a run: stderr plus one log file per run and shard, plain or JSON lines.

Batch jobs are read by machines as often as by people: ``--log-format json`` writes one JSON
object per line (time, level, message, process, and the shard) to stderr and the log file.
Worker processes (one per device) get the same set-up through :class:`LogSetup`.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

LogFormat = Literal["text", "json"]
TEXT_FORMAT = "%(asctime)s %(levelname)s %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record."""

    def __init__(self, shard: str = "") -> None:
        super().__init__()
        self.shard = shard
        self.host = socket.gethostname()

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON line."""
        body = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "message": record.getMessage(),
            "logger": record.name,
            "host": self.host,
            "pid": record.process,
        }
        if self.shard:
            body["shard"] = self.shard
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        return json.dumps(body)


class _RunFileHandler(logging.FileHandler):
    """A file handler that creates the file (and its folder) only when the first line comes,
    so a run refused at once (bad config) leaves no output folder behind."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, mode="a", encoding="utf-8", delay=True, errors="backslashreplace")

    def _open(self):  # type: ignore[no-untyped-def]
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()


@dataclass(frozen=True)
class LogSetup:
    """How to log: level, format and the run's log file (None: stderr only)."""

    level: int = logging.INFO
    format: LogFormat = "text"
    file: Path | None = None
    shard: str = ""

    def apply(self) -> None:
        """Install the handlers on the root logger, replacing those an earlier call installed.

        Handlers others installed (a host application's, pytest's) are left alone.
        """
        root = logging.getLogger()
        detach_run_handlers()
        formatter: logging.Formatter = (
            JsonFormatter(self.shard) if self.format == "json" else logging.Formatter(TEXT_FORMAT)
        )
        stream = logging.StreamHandler(sys.stderr)
        stream._xaimed = True  # type: ignore[attr-defined]
        stream.setFormatter(formatter)
        stream.setLevel(self.level)
        root.addHandler(stream)
        if self.file is not None:
            # Append: worker processes of the same run write to the same file, line by line.
            handler = _RunFileHandler(self.file)
            handler._xaimed = True  # type: ignore[attr-defined]
            handler.setFormatter(formatter)
            handler.setLevel(min(self.level, logging.INFO))
            root.addHandler(handler)
            # "xaimed.file": lines meant for the log file only (what the CLI also prints).
            to_file = logging.getLogger("xaimed.file")
            to_file.propagate = False
            to_file.setLevel(logging.INFO)
            to_file.addHandler(handler)
        root.setLevel(min(self.level, logging.INFO) if self.file is not None else self.level)


def detach_run_handlers() -> None:
    """Remove and close the handlers :meth:`LogSetup.apply` installed (at the end of a run)."""
    for logger in (logging.getLogger(), logging.getLogger("xaimed.file")):
        for handler in list(logger.handlers):
            if getattr(handler, "_xaimed", False):
                logger.removeHandler(handler)
                handler.close()


def run_log_path(out_dir: Path, shard_suffix: str, command: str = "explain") -> Path:
    """``OUT/logs/<command><shard>-<UTC time>-<pid>.log``: one file per run and shard."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return out_dir / "logs" / f"{command}{shard_suffix}-{stamp}-{os.getpid()}.log"
