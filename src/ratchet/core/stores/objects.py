"""The object store: eval summaries (``evals/{commit}/summary.json``) and telemetry, over fsspec.

Any fsspec URL works (``s3://bucket/prefix`` with s3fs installed, ``[store] objects_options`` for the
endpoint); the default is a folder under the workspace's ``.ratchet/``. An object is written whole, or
appended to by one writer only: on S3 an append rewrites the object, so two appenders would lose each
other's lines (telemetry keys are per process for that reason).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import fsspec

if TYPE_CHECKING:
    from ratchet.core.workspace import Workspace


class ObjectStore:
    def __init__(self, url: str, options: dict[str, Any] | None = None):
        self.fs, self.base = fsspec.core.url_to_fs(url, **(options or {}))
        self.url = url
        self.fs.makedirs(self.base, exist_ok=True)

    @classmethod
    def for_workspace(cls, workspace: Workspace) -> ObjectStore:
        url = workspace.config.store.objects
        if "://" not in url:
            url = str(workspace.root / url)
        return cls(url, workspace.config.store.objects_options)

    def _path(self, key: str) -> str:
        return f"{self.base.rstrip('/')}/{key.lstrip('/')}"

    def put_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        tmp = f"{path}.tmp"
        with self.fs.open(tmp, "wb") as f:  # write then move, so readers never see half a file
            f.write(data)
        self.fs.mv(tmp, path)

    def get_bytes(self, key: str) -> bytes | None:
        try:
            with self.fs.open(self._path(key), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def put_json(self, key: str, obj: Any) -> None:
        self.put_bytes(key, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())

    def get_json(self, key: str) -> Any | None:
        data = self.get_bytes(key)
        return None if data is None else json.loads(data)

    def append_line(self, key: str, line: str) -> None:
        path = self._path(key)
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        with self.fs.open(path, "ab") as f:
            f.write(line.rstrip("\n").encode() + b"\n")

    def exists(self, key: str) -> bool:
        return self.fs.exists(self._path(key))

    def list(self, prefix: str = "") -> list[str]:
        root = self._path(prefix)
        if not self.fs.exists(root):
            return []
        base = self.base.rstrip("/") + "/"
        return sorted(p.removeprefix(base) for p in self.fs.find(root))
