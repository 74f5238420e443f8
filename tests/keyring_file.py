"""A keyring backend for tests: passwords from the JSON file named by $TEST_KEYRING_FILE
(``{"service username": "password"}``), so that pip's and uv's keyring support can be used
without a desktop keyring. Chosen with PYTHON_KEYRING_BACKEND=keyring_file.FileKeyring."""

from __future__ import annotations

import json
import os

from keyring.backend import KeyringBackend


class FileKeyring(KeyringBackend):
    priority = 1  # type: ignore[assignment]

    def _load(self) -> dict[str, str]:
        with open(os.environ["TEST_KEYRING_FILE"]) as f:
            data: dict[str, str] = json.load(f)
        return data

    def get_password(self, service: str, username: str) -> str | None:
        return self._load().get(f"{service} {username}")

    def set_password(self, service: str, username: str, password: str) -> None:
        raise NotImplementedError

    def delete_password(self, service: str, username: str) -> None:
        raise NotImplementedError
