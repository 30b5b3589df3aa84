"""Secrets by reference: a secret field holds `{env: NAME}` or `{file: PATH}`, never the secret itself.

```yaml
providers:
  introspection:
    - {name: corp, endpoint: https://idp/introspect, client_id: bastion, client_secret: {file: secrets/corp}}
gateway:
  state: redis://10.0.0.7:6379/0
  state_password: {env: REDIS_PASSWORD}
```

`resolve_secrets` reads every reference of a validated config once per load (so a reload re-reads the files)
and keeps the value on the reference, out of every dump: `model_dump`, `/config`, `explain` and the audit show
only where the secret comes from. Errors name the variable or the file, never a value.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, PrivateAttr, SecretStr, model_validator

from bastion.config.base import Model

_MAX_SECRET_BYTES = 64 * 1024  # a key or a token, not a file someone pointed at by mistake


class SecretRef(Model):
    """`{env: NAME}` (an environment variable) or `{file: PATH}` (relative to the config file's directory).
    The file's content is the secret, with surrounding whitespace removed; it is read again on each reload."""

    env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="`{env: REDIS_PASSWORD}`")
    file: Path | None = Field(None, description="`{file: /run/secrets/redis}`")
    _value: SecretStr | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _one(self) -> SecretRef:
        if (self.env is None) == (self.file is None):
            raise ValueError("a secret is `{env: NAME}` or `{file: PATH}` (exactly one; never the secret itself)")
        return self

    @property
    def source(self) -> str:
        """Where the secret comes from, for messages: `env REDIS_PASSWORD` or `file secrets/redis`."""
        return f"env {self.env}" if self.env is not None else f"file {self.file}"

    def load(self, base_dir: Path, environ: Mapping[str, str] | None = None) -> str | None:
        """Read the secret now; returns an error message (naming the source only) or None."""
        if self.env is not None:
            value = (os.environ if environ is None else environ).get(self.env)
            if not value:
                return f"environment variable {self.env} is not set (secret reference)"
        else:
            path = self.file if self.file is not None and self.file.is_absolute() else base_dir / str(self.file)
            try:
                with path.open("rb") as handle:
                    raw = handle.read(_MAX_SECRET_BYTES + 1)
            except OSError as exc:
                return f"secret file {path}: cannot be read ({exc.strerror or type(exc).__name__})"
            if len(raw) > _MAX_SECRET_BYTES:
                return f"secret file {path}: larger than {_MAX_SECRET_BYTES} bytes"
            try:
                value = raw.decode("utf-8").strip()
            except UnicodeDecodeError:
                return f"secret file {path}: not UTF-8 text"
            if not value:
                return f"secret file {path}: empty"
        self._value = SecretStr(value)
        return None

    def value(self) -> str:
        """The secret. Only code that uses it calls this; an unread reference is a bug, not an empty secret."""
        if self._value is None:
            raise RuntimeError(f"secret from {self.source} was not loaded")
        return self._value.get_secret_value()

    def __repr__(self) -> str:
        return f"SecretRef({self.source})"

    __str__ = __repr__


def references(model: Any, loc: tuple[str | int, ...] = ()) -> Iterator[tuple[tuple[str | int, ...], SecretRef]]:
    """Every `SecretRef` in a validated config, with its YAML location."""
    if isinstance(model, SecretRef):
        yield loc, model
    elif isinstance(model, BaseModel):
        for name, info in type(model).model_fields.items():
            yield from references(getattr(model, name), (*loc, info.alias or name))
    elif isinstance(model, list | tuple):
        for index, item in enumerate(model):
            yield from references(item, (*loc, index))
    elif isinstance(model, dict):
        for key, item in model.items():
            yield from references(item, (*loc, key))


def resolve_secrets(model: BaseModel, base_dir: Path,
                    environ: Mapping[str, str] | None = None) -> list[tuple[tuple[str | int, ...], str]]:
    """Load every secret of `model`; returns (location, message) for each that cannot be read."""
    problems = []
    for loc, ref in references(model):
        message = ref.load(base_dir, environ)
        if message is not None:
            problems.append((loc, message))
    return problems


def hmac_jwks(key: SecretRef | None) -> bytes | None:
    """A JWKS holding one symmetric key (RFC 7518 §6.4) made of a loaded secret's UTF-8 bytes."""
    if key is None:
        return None
    k = base64.urlsafe_b64encode(key.value().encode()).rstrip(b"=").decode("ascii")
    return json.dumps({"keys": [{"kty": "oct", "k": k}]}).encode()


def load_cert_chain(context: ssl.SSLContext, cert: str, key: Path | SecretRef, base_dir: Path) -> None:
    """`context.load_cert_chain` with the private key as a path or a secret reference. Python's `ssl` reads keys
    only from files: a referenced key is written to a private file (memory-backed /dev/shm when there is one),
    loaded and removed at once."""
    if not isinstance(key, SecretRef):
        context.load_cert_chain(cert, str(key if key.is_absolute() else base_dir / key))
        return
    directory = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(prefix="bastion-key-", dir=directory) as private:  # mode 0700
        path = Path(private) / "key.pem"
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(key.value() + "\n")
        context.load_cert_chain(cert, str(path))


def secret_values(model: BaseModel) -> list[str]:
    """The loaded secret values of a config (for tests and for scrubbing what must never show them)."""
    return [ref.value() for _, ref in references(model) if ref._value is not None]
