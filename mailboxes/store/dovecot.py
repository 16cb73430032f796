"""The private Dovecot instance: configuration, master user, and the list of BALs it serves.

Dovecot never reads our tables. Its interface is two files the portal writes under
``DOVECOT_DIR``: ``users`` (every active or suspended BAL, with a password that can never
match) and ``master-users`` (the portal's master user). The portal logs in as
``<bal address>*<master user>`` after its own access check (ARCHITECTURE.md, data flow 3).
The portal reaches it only through two unix sockets in the instance folder (``run/lmtp`` for
delivery, ``run/imap-portal`` for reading), which only the portal's user may open: no network
path for LMTP, which has no authentication, nor for the master password.
Pitfalls of a rootless instance: ../shared/reference/platform-notes.md §2.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import grp
import hashlib
import os
import pwd
import secrets
import shutil
import socket
import string
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from mailboxes.store import dovecot_lps

TEMPLATE = Path(settings.BASE_DIR) / "deploy" / "dovecot" / "dovecot.conf.tmpl"


def ssha512(secret: bytes) -> str:
    """Dovecot's {SSHA512} scheme: base64(sha512(secret + salt) + salt)."""
    salt = secrets.token_bytes(16)
    return "{SSHA512}" + base64.b64encode(hashlib.sha512(secret + salt).digest() + salt).decode()


SOCKET_PATH_MAX = 107  # sockaddr_un.sun_path on Linux, without its final NUL


@dataclass(frozen=True)
class Instance:
    base_dir: Path
    mail_root: Path
    imap_port: int
    listen: str = "127.0.0.1"
    # A backend behind a proxy also takes LMTP on this TCP port (0: the unix socket only), from
    # the proxy; a proxy (DOVECOT_BACKENDS set) stores no mail and passes each BAL to its
    # backend (docs/deployment.md).
    lmtp_port: int = 0
    proxy: bool = False

    @property
    def config_path(self) -> Path:
        return self.base_dir / "dovecot.conf"

    # The listeners of the template, relative to Dovecot's base_dir (<instance>/run); absolute
    # here, as clients must name them (smtplib.LMTP takes a path only when it starts with /).
    @property
    def lmtp_socket(self) -> Path:
        return (self.base_dir / "run" / "lmtp").absolute()

    @property
    def imap_socket(self) -> Path:
        return (self.base_dir / "run" / "imap-portal").absolute()

    @property
    def users_path(self) -> Path:
        return self.base_dir / "users"


@dataclass(frozen=True)
class _Identity:
    mail_uid: int
    mail_gid: int
    internal_user: str
    internal_group: str
    login_user: str


def _identity() -> _Identity:
    """Who the mail processes run as. Dovecot refuses uid 0 for mail (platform-notes §2):
    as root we use a dedicated system user and Dovecot's packaged service users."""
    if os.geteuid() == 0:
        mail = pwd.getpwnam(settings.DOVECOT_MAIL_USER)
        return _Identity(mail.pw_uid, mail.pw_gid, "dovecot", "dovecot", "dovenull")
    me = pwd.getpwuid(os.geteuid())
    group = grp.getgrgid(os.getegid()).gr_name
    return _Identity(me.pw_uid, os.getegid(), me.pw_name, group, me.pw_name)


def ensure_mail_user() -> None:
    """Create the unprivileged mail user when running as root and it is missing (embedded
    mode and tests; production images create it at build time)."""
    if os.geteuid() != 0:
        return
    try:
        pwd.getpwnam(settings.DOVECOT_MAIL_USER)
    except KeyError:
        subprocess.run(  # noqa: S603 (fixed arguments)
            [
                "/usr/sbin/useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                settings.DOVECOT_MAIL_USER,
            ],
            check=True,
        )


def instance_from_settings() -> Instance:
    return Instance(
        base_dir=Path(settings.DOVECOT_DIR),
        mail_root=Path(settings.DOVECOT_MAIL_ROOT),
        imap_port=settings.DOVECOT_IMAP_PORT,
        listen=settings.DOVECOT_LISTEN,
        proxy=bool(settings.DOVECOT_BACKENDS),
    )


@dataclass(frozen=True)
class Backend:
    """A Dovecot backend behind the proxy: where the proxy passes the IMAP logins and the LMTP
    deliveries of the BALs assigned to it (Mailbox.dovecot_backend)."""

    name: str
    host: str
    imap_port: int
    lmtp_port: int


BACKEND_NAME_MAX = 32


def backends_from_settings() -> dict[str, Backend]:
    """DOVECOT_BACKENDS ("name=host:imap_port:lmtp_port", ...), in the order listed: the first
    one also takes the BALs that name no backend. Empty: a single instance, no proxy.

    Raises InstanceError (French) for a malformed entry."""
    backends: dict[str, Backend] = {}
    for item in settings.DOVECOT_BACKENDS:
        name, _eq, target = item.partition("=")
        host, _c1, ports = target.rpartition(":")
        host, _c2, imap = host.rpartition(":")
        name = name.strip()
        valid = (
            name
            and len(name) <= BACKEND_NAME_MAX
            and all(c.isalnum() or c in "-_" for c in name)
            and host
            and all(c.isalnum() or c in ".-_[]:" for c in host)
            and imap.isdigit()
            and ports.isdigit()
        )
        if not valid or name in backends:
            raise InstanceError(
                f"DOVECOT_BACKENDS : « {item} » n'est pas de la forme nom=hôte:port_imap:port_lmtp "
                "(noms distincts, lettres, chiffres, - et _)."
            )
        backends[name] = Backend(name, host.strip("[]"), int(imap), int(ports))
    return backends


def socket_user() -> str:
    """Who may open the LMTP and portal IMAP sockets: DOVECOT_SOCKET_USER (the user the portal's
    processes run as, when Dovecot is started by another), else whoever writes the config."""
    name = settings.DOVECOT_SOCKET_USER or pwd.getpwuid(os.geteuid()).pw_name
    try:
        pwd.getpwnam(name)
    except KeyError as exc:
        raise InstanceError(
            f"DOVECOT_SOCKET_USER : l'utilisateur {name} n'existe pas sur cette machine."
        ) from exc
    return name


def _atomic_write(path: Path, content: str, mode: int, group: int | None = None) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    tmp.write_text(content, encoding="utf-8")
    tmp.chmod(mode)
    if group is not None and os.geteuid() == 0:
        os.chown(tmp, 0, group)
    os.replace(tmp, path)


class InstanceError(RuntimeError):
    pass


def _check_traversable(path: Path) -> None:
    """As root, Dovecot's services run as unprivileged users: every parent folder of the
    instance must let them through (a 0700 home or pytest tmp dir does not)."""
    if os.geteuid() != 0:
        return
    for parent in [path, *path.parents]:
        if parent.exists() and not parent.stat().st_mode & 0o001:
            raise InstanceError(
                f"Dovecot ne pourra pas lire {path} : le dossier {parent} n'est pas traversable "
                f"par les autres utilisateurs (chmod o+x {parent}, ou choisissez un autre "
                f"PORTAL_VAR_DIR)."
            )


def write_instance(instance: Instance, *, master_user: str, master_password: str) -> None:
    """Write the configuration, the master user and the mail root of a Dovecot instance.

    Raises InstanceError when Dovecot's unprivileged services could not reach the files."""
    ensure_mail_user()
    ident = _identity()
    instance.base_dir.mkdir(parents=True, exist_ok=True)
    instance.base_dir.chmod(0o755)  # Dovecot's unprivileged services traverse it
    instance.mail_root.mkdir(parents=True, exist_ok=True)
    _check_traversable(instance.base_dir)
    _check_traversable(instance.mail_root)
    for sock in (instance.lmtp_socket, instance.imap_socket):
        if len(str(sock).encode()) > SOCKET_PATH_MAX:
            raise InstanceError(
                f"Le chemin de la socket {sock} dépasse {SOCKET_PATH_MAX} octets : "
                "choisissez un DOVECOT_DIR plus court."
            )
    if os.geteuid() == 0:
        os.chown(instance.mail_root, ident.mail_uid, ident.mail_gid)
    # A stale penalty socket from a killed run stalls every auth for 5 s (platform-notes §2).
    with contextlib.suppress(FileNotFoundError):
        (instance.base_dir / "run" / "anvil-auth-penalty").unlink()
    config = string.Template(TEMPLATE.read_text(encoding="utf-8")).substitute(
        base_dir=instance.base_dir,
        instance=hashlib.sha256(str(instance.base_dir).encode()).hexdigest()[:8],
        listen=instance.listen,
        mail_uid=ident.mail_uid,
        mail_gid=ident.mail_gid,
        internal_user=ident.internal_user,
        internal_group=ident.internal_group,
        login_user=ident.login_user,
        postmaster_domain=settings.DOVECOT_POSTMASTER_DOMAIN,
        imap_port=instance.imap_port,
        socket_user=socket_user(),
        mail_root=instance.mail_root,
    )
    config += _role_config(instance) + dovecot_lps.section(instance.base_dir)
    _atomic_write(instance.config_path, config, 0o644)
    internal_gid = grp.getgrnam(ident.internal_group).gr_gid
    dovecot_lps.write_files(instance.base_dir, _atomic_write, internal_gid)
    _atomic_write(
        instance.base_dir / "master-users",
        f"{master_user}:{ssha512(master_password.encode())}\n",
        0o640,
        group=internal_gid,
    )
    if not instance.users_path.exists():
        write_users(instance, [])


def _role_config(instance: Instance) -> str:
    """What a proxy or a backend adds to the template (nothing for the single instance)."""
    extra = ""
    if instance.lmtp_port:
        extra += (
            "\n# Backend behind a proxy: LMTP from the proxy over TCP, on the backends' network.\n"
            "service lmtp {\n"
            "  inet_listener lmtp {\n"
            f"    address = {instance.listen}\n"
            f"    port = {instance.lmtp_port}\n"
            "  }\n"
            "}\n"
        )
    if instance.proxy:
        extra += (
            "\n# Proxy (DOVECOT_BACKENDS): each BAL's line in users names its backend (proxy=y,\n"
            "# host, port, master); IMAP logins and LMTP deliveries are passed to it, with the\n"
            "# master user's login. No mail is stored here.\n"
            "lmtp_proxy = yes\n"
        )
    return extra


@contextlib.contextmanager
def _lock(instance: Instance) -> Iterator[None]:
    instance.base_dir.mkdir(parents=True, exist_ok=True)
    with open(instance.base_dir / ".users.lock", "a") as handle:
        if os.geteuid() == 0:  # the root-run Dovecot (compose) must not lock web and worker out
            owner = instance.base_dir.stat()
            os.fchown(handle.fileno(), owner.st_uid, owner.st_gid)
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_users(
    instance: Instance, addresses: Iterable[str], *, routes: Mapping[str, Backend] | None = None
) -> None:
    """Replace the list of BALs Dovecot serves (atomic; Dovecot re-reads it on change).

    The password field is the hash of a random secret nobody keeps: a BAL cannot be opened
    with a credential of its own, only through the master user.

    ``routes`` (a proxy's users file: the backend of each address) adds the passdb fields that
    pass the BAL's IMAP logins and LMTP deliveries to its backend, logging in there as the
    master user with the password the portal gave (the same master user on every backend).
    """
    routes = {a.lower(): b for a, b in (routes or {}).items()}
    lines = []
    for address in sorted({a.lower() for a in addresses}):
        if ":" in address or "\n" in address:
            raise ValueError(f"refusing an address that would corrupt the users file: {address!r}")
        fields = ""
        if instance.proxy:
            backend = routes[address]
            # One passdb line for both protocols: %s is the service asking (imap or lmtp).
            port = f"%{{if;%s;eq;lmtp;{backend.lmtp_port};{backend.imap_port}}}"
            fields = (
                f"proxy=y host={backend.host} port={port} "
                f"master={settings.DOVECOT_MASTER_USER} proxy_timeout={settings.DOVECOT_TIMEOUT}"
            )
        lines.append(f"{address}:{ssha512(secrets.token_bytes(32))}::::::{fields}\n")
    with _lock(instance):
        _atomic_write(instance.users_path, "".join(lines), 0o644)


def mail_home(instance: Instance, address: str) -> Path:
    """The home of one BAL as the userdb derives it (``home=<mail_root>/%Ld/%Ln``), its
    Maildir inside. Raises ValueError for an address whose home would not be exactly two
    levels below ``mail_root``."""
    local, _at, domain = address.lower().partition("@")
    for part in (local, domain):
        if part in ("", ".", "..") or "/" in part or "@" in part or "\0" in part:
            raise ValueError(f"refusing a mail home outside the mail root: {address!r}")
    root = instance.mail_root.resolve()
    home = root / domain / local
    if home.resolve().parent.parent != root:  # a symlinked domain folder, for one
        raise ValueError(f"refusing a mail home outside the mail root: {address!r}")
    return home


def remove_mail_home(instance: Instance, address: str) -> bool:
    """Delete the home (and Maildir) of one BAL for good; False when it has none. Only for a
    BAL that Dovecot no longer serves and whose mail has been exported. Raises
    FileNotFoundError when the mail root itself is not here (a process that does not mount the
    mail): "nothing to delete" would then be a lie; likewise on a proxy, which stores none (the
    BAL's backend holds it: docs/deployment.md)."""
    if instance.proxy:
        raise FileNotFoundError(f"a Dovecot proxy stores no mail: {instance.mail_root}")
    if not instance.mail_root.is_dir():
        raise FileNotFoundError(f"the mail root is not mounted here: {instance.mail_root}")
    home = mail_home(instance, address)
    if home.is_symlink():
        raise ValueError(f"refusing to delete through a symlink: {home}")
    if not home.exists():
        return False
    shutil.rmtree(home)
    return True


def wait_ready(instance: Instance, timeout: float = 15) -> None:
    """Wait for the greeting on the portal's IMAP socket: a socket that accepts is not enough
    (platform-notes §2)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(1)
                sock.connect(str(instance.imap_socket))
                if b"ready" in sock.recv(256):
                    return
        except OSError:
            time.sleep(0.05)
    raise InstanceError("Dovecot n'a pas répondu à temps.")


def start(instance: Instance, log_path: Path) -> subprocess.Popen[bytes]:
    """Start Dovecot in the foreground of a child process (tests and benchmarks)."""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(  # noqa: S603
            ["dovecot", "-F", "-c", str(instance.config_path)],  # noqa: S607
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_ready(instance)
    except InstanceError:
        proc.kill()
        raise
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def sessions_kick(address: str, remote: str | None = None) -> None:
    """Disconnect ``address``'s IMAP sessions (from ``remote`` only, when given) at once:
    ``doveadm kick`` on the instance. A session whose right ended (a token expired, a
    certificate unbound) must not outlive it; the others simply reconnect."""
    config = instance_from_settings().config_path
    masks = [address, remote] if remote else [address]
    subprocess.run(  # noqa: S603 (fixed program, values from our tables)
        ["doveadm", "-c", str(config), "kick", *masks],  # noqa: S607
        check=False,
        capture_output=True,
        timeout=settings.DOVECOT_TIMEOUT,
    )
