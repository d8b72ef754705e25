"""``pgwarden fetch-key``: the temboard UI's signing key, fetched over HTTPS
and written atomically."""

from __future__ import annotations

import argparse
import os

from agent_core.cli.commands import _config_path
from agent_core.config import RawConfig
from agent_core.errors import PgwardenError

#: Largest signing key document accepted from the UI (an RSA 4096 PEM is about 800 bytes).
MAX_KEY_BYTES = 65536


def fetch_key(url: str, insecure: bool = False, ca_file: str | None = None, timeout: float = 30) -> bytes:
    """``<url>/signing.key`` of a temboard UI, validated as an RSA public key."""
    import ssl
    import urllib.error
    import urllib.request
    from urllib.parse import urlsplit

    from agent_core.auth.signing import load_public_key

    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise PgwardenError(f"{url!r}: give the UI's https:// URL (the key is only fetched over HTTPS)")
    context = ssl.create_default_context(cafile=ca_file)
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    target = url.rstrip("/") + "/signing.key"
    try:
        with urllib.request.urlopen(target, timeout=timeout, context=context) as response:  # noqa: S310 https checked
            data = response.read(MAX_KEY_BYTES + 1)
    except urllib.error.HTTPError as e:
        raise PgwardenError(f"{target}: the UI answered {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        hint = ""
        if isinstance(reason, ssl.SSLCertVerificationError):
            hint = " (a self-signed UI certificate: --ca-file with its CA, or --insecure)"
        raise PgwardenError(f"{target}: {reason}{hint}") from None
    if len(data) > MAX_KEY_BYTES:
        raise PgwardenError(f"{target}: more than {MAX_KEY_BYTES} bytes: not a public key")
    try:
        load_public_key(data)
    except ValueError as e:
        raise PgwardenError(f"{target}: {e}") from None
    return data


def write_key(path: str, data: bytes, force: bool) -> bool:
    """Write ``data`` to ``path`` atomically, mode 0644 (a public key: readable,
    writable by its owner only); False when the file already held it."""
    import tempfile

    if os.path.lexists(path):
        try:
            with open(path, "rb") as f:
                if f.read(MAX_KEY_BYTES + 1) == data:
                    return False
        except OSError:
            pass
        if not force:
            raise PgwardenError(f"{path} exists and holds another key: --force replaces it")
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".signing-key-", dir=directory)
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return True


def cmd_fetch_key(args: argparse.Namespace) -> int:
    import hashlib

    from agent_core.auth.signing import load_public_key

    raw = RawConfig.read(_config_path(args)) if (args.config or os.path.exists(_config_path(args))) else RawConfig()
    configured = raw.get("signing", "public_key", os.environ)
    path = args.output or configured
    if not path:
        raise PgwardenError("no [signing] public_key in the config: give the file to write with --output")
    data = fetch_key(args.url, insecure=args.insecure, ca_file=args.ca_file)
    key = load_public_key(data)
    from cryptography.hazmat.primitives import serialization

    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    fingerprint = hashlib.sha256(der).hexdigest()
    written = write_key(path, data, args.force)
    state = "written to" if written else "unchanged in"
    print(f"signing key of {args.url} (RSA {key.key_size} bits, SHA-256 {fingerprint}) {state} {path}")
    if configured and os.path.abspath(configured) == os.path.abspath(path):
        print("a running agent uses it from its next signed request")
    else:
        print(f"set [signing] public_key = {os.path.abspath(path)} in the config, then restart the agent")
    return 0
