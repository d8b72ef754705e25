"""``pgwarden setup``: the host's side of it.

Directories and defaults, the templated systemd unit's text, the pgwarden
command's path, a free agent port, the host's names and a self-signed
certificate, and user and group names for the messages.
"""

from __future__ import annotations

import datetime
import grp
import ipaddress
import os
import pwd
import shutil
import socket
import sys

DEFAULT_ETC = "/etc/pgwarden"
DEFAULT_STATE = "/var/lib/pgwarden"
DEFAULT_SYSTEMD = "/etc/systemd/system"
FIRST_PORT = 2345
#: Where a package puts the templated unit (setup writes none then).
PACKAGED_UNIT_DIRS = ("/usr/lib/systemd/system", "/lib/systemd/system")

UNIT_TEMPLATE = """\
# pgwarden@.service: one agent per PostgreSQL instance, {origin}.
# The instance name is Debian's <version>-<cluster> (pgwarden@15-main follows
# postgresql@15-main); its config is {etc_dir}/<instance>/pgwarden.conf.
# It runs as the postgres OS user so that the activity plugin can read the
# backends' I/O counters and the agent can use the socket with peer
# authentication (another cluster owner: a drop-in pgwarden@<instance>.service.d/user.conf).
[Unit]
Description=pgwarden agent for the PostgreSQL instance %i
After=network-online.target postgresql.service postgresql@%i.service
Wants=network-online.target

[Service]
Type=simple
User=postgres
Group=postgres
Environment=PGWARDEN_CONFIG={etc_dir}/%i/pgwarden.conf
ExecStartPre={pgwarden} check-config
ExecStart={pgwarden} serve
# SIGTERM: stop accepting, let running operations finish for a few seconds,
# cancel the rest, exit 0.
KillSignal=SIGTERM
TimeoutStopSec=60
# Descriptors: [agent] max_connections (default 4096) client connections per
# listening address, plus about 256 for PostgreSQL, the store and the log.
LimitNOFILE=8192
Restart=on-failure
RestartSec=5
NoNewPrivileges=true
ProtectSystem=full
ProtectHome=true
PrivateTmp=true

[Install]
WantedBy=multi-user.target
"""


def unit_text(pgwarden: str, etc_dir: str = DEFAULT_ETC, packaged: bool = False) -> str:
    """The templated unit: as ``pgwarden setup`` writes it, or as the Debian
    package ships it (``packaged``: ``make deb`` takes it from here)."""
    origin = "written by `pgwarden setup`"
    if packaged:
        origin = "from the pgwarden package (`pgwarden setup` makes instances)"
    return UNIT_TEMPLATE.format(pgwarden=pgwarden, etc_dir=etc_dir.rstrip("/") or "/", origin=origin)


# --- helpers ------------------------------------------------------------------------------------


def pgwarden_command() -> str:
    """The absolute path of this installation's pgwarden command (a virtualenv
    is not on the agent user's PATH)."""
    candidate = os.path.join(os.path.dirname(sys.executable), "pgwarden")
    if os.path.isfile(candidate):
        return candidate
    found = shutil.which("pgwarden")
    return os.path.abspath(found) if found else f"{sys.executable} -m agent_core.cli"


def _installed(plugin: str) -> bool:
    from agent_core.plugins import installed

    return plugin in installed()


def _existing_setting(path: str, section: str, key: str) -> str | None:
    from agent_core.config import RawConfig

    if not os.path.exists(path):
        return None
    try:
        value = RawConfig.read(path).sections.get(section, {}).get(key)
    except Exception:
        return None
    return value.strip() if value else None


def free_agent_port(etc_dir: str) -> int:
    """The first port from 2345 that no instance under ``etc_dir`` uses and
    nothing listens on."""
    used = set()
    if os.path.isdir(etc_dir):
        for name in os.listdir(etc_dir):
            text = _existing_setting(os.path.join(etc_dir, name, "pgwarden.conf"), "agent", "port")
            if text and text.isdigit():
                used.add(int(text))
    port = FIRST_PORT
    while port in used or not _bindable(port):
        port += 1
    return port


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))  # noqa: S104 - only a probe: is the port free on every address
        except OSError:
            return False
    return True


def host_names(extra: list[str] | None = None) -> list[str]:
    names = [socket.getfqdn(), socket.gethostname(), "localhost", "127.0.0.1", "::1", *(extra or [])]
    return list(dict.fromkeys(n for n in names if n))


def self_signed(names: list[str], days: int = 3650) -> tuple[bytes, bytes]:
    """A self-signed certificate for ``names`` (DNS names and IP addresses) and its key, in PEM."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    alt: list[x509.GeneralName] = []
    for name in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return (
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)
