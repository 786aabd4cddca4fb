"""Ed25519 signing keys for champion bundles.

The farm (the research PC) holds the private key and signs every bundle it promotes; the live
host holds only public keys and refuses a bundle no trusted key signed. A sha256 proves that a
file is intact, not who wrote it: anyone can recompute one.

Files: ``NAME.key`` (PKCS#8 PEM, unencrypted, mode 0600: like an ssh key, refused when group
or others can read it) and ``NAME.pub`` (SubjectPublicKeyInfo PEM, safe to copy). A key's id
is the first 16 hex digits of the sha256 of its 32 raw public bytes.

Where they live: the private key at ``$EMP_SIGNING_KEY`` or ``$EMP_HOME/keys/emp-signing.key``;
trusted public keys in ``$EMP_HOME/keys/*.pub`` on the farm, and on the live host wherever its
config says (``$EMP_TRUSTED_KEYS``: ``.pub`` files or directories, separated by ``:``).
Private keys are never copied to the live host, and never printed.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from core.atomic import fsync_dir, temp_path_for
from core.errors import EmpError

DEFAULT_NAME = "emp-signing"


class KeyFileError(EmpError, ValueError):
    """A key file that cannot be used: missing, unreadable, too open, or not an Ed25519 key."""


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def keys_dir(home: Path) -> Path:
    return Path(home) / "keys"


def default_private_key(home: Path) -> Path:
    """``$EMP_SIGNING_KEY`` if set, else ``$EMP_HOME/keys/emp-signing.key``."""
    env = os.environ.get("EMP_SIGNING_KEY")
    return Path(env) if env else keys_dir(home) / f"{DEFAULT_NAME}.key"


def _write_private(path: Path, data: bytes) -> None:
    """Atomically, with the temp file created 0600 (the key is never readable by others, not
    even for an instant)."""
    tmp = temp_path_for(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def keygen(directory: Path, name: str = DEFAULT_NAME, *, force: bool = False
           ) -> tuple[Path, Path, str]:
    """A new key pair as ``directory/NAME.key`` and ``NAME.pub``, both mode 0600; returns the
    two paths and the key id. An existing key is never overwritten unless ``force``."""
    directory = Path(directory)
    priv_path, pub_path = directory / f"{name}.key", directory / f"{name}.pub"
    for p in (priv_path, pub_path):
        if p.exists() and not force:
            raise KeyFileError(f"{p} exists; refusing to overwrite a key (bundles signed with it "
                               f"would no longer verify). Use --force to replace it")
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    private = Ed25519PrivateKey.generate()
    _write_private(priv_path, private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    _write_private(pub_path, private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return priv_path, pub_path, key_id(private.public_key())


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"{path}: {what} not found") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: {what} unreadable ({exc.strerror})") from None


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """The signing key at ``path``; refused when group or others may read it (as ssh does)."""
    path = Path(path)
    data = _read(path, "signing key")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise KeyFileError(f"{path}: permissions {mode:04o} are too open for a private key; "
                           f"run: chmod 600 {path}")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise KeyFileError(f"{path}: not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: not an Ed25519 key ({type(key).__name__})")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    data = _read(Path(path), "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise KeyFileError(f"{path}: not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path}: not an Ed25519 public key ({type(key).__name__})")
    return key


def load_trusted_keys(sources: list[Path]) -> dict[str, Ed25519PublicKey]:
    """key id -> public key, from ``.pub`` files and directories of them."""
    out: dict[str, Ed25519PublicKey] = {}
    for src in sources:
        src = Path(src)
        files = sorted(src.glob("*.pub")) if src.is_dir() else [src]
        for f in files:
            key = load_public_key(f)
            out[key_id(key)] = key
    return out


def trusted_key_sources(home: Path) -> list[Path]:
    """``$EMP_TRUSTED_KEYS`` (``:``-separated files or directories) if set, else
    ``$EMP_HOME/keys``."""
    env = os.environ.get("EMP_TRUSTED_KEYS")
    if env:
        return [Path(p) for p in env.split(os.pathsep) if p]
    return [keys_dir(home)]
