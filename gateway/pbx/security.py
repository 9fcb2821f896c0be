"""The PBX's security events as the gateway's own structured log records (sans I/O).

Asterisk reports failed logins to its SIP and AMI services (``InvalidPassword``,
``ChallengeResponseFailed``, ``InvalidAccountID``, ``FailedACL``...) as AMI events of class
``security``. Each becomes a ``SecurityRecord`` whose log line has the ``source`` field
(``ip:port``) the gateway's own "register refused" lines have, plus ``remote_ip``, so one log
search or one fail2ban-style rule covers both. Routine events (a challenge sent, a login that worked) are
kept at debug level.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from gateway.pbx.ami_events import SecurityEventReported

# Events that say an attempt failed or was refused; the rest are the normal flow of a login.
FAILURES = frozenset(
    {
        "FailedACL",
        "InvalidAccountID",
        "InvalidPassword",
        "ChallengeResponseFailed",
        "RequestNotAllowed",
        "AuthMethodNotAllowed",
        "RequestBadFormat",
        "UnexpectedAddress",
        "InvalidTransport",
        "SessionLimit",
        "MemoryLimit",
        "LoadAverageLimit",
    }
)


@dataclass(frozen=True)
class Address:
    transport: str
    ip: str
    port: int


@dataclass(frozen=True)
class SecurityRecord:
    event: str
    failed: bool
    level: int  # logging level
    service: str  # PJSIP, AMI ...
    account: str
    remote: Address | None
    local: Address | None
    pbx_time: str  # Asterisk's EventTV, as it wrote it
    session: str  # Asterisk's SessionID: the SIP Call-ID, or the AMI session

    def log_fields(self) -> dict[str, str | int | bool]:
        fields: dict[str, str | int | bool] = {
            "origin": "pbx",
            "security_event": self.event,
            "failed": self.failed,
            "service": self.service,
            "account": self.account,
            "pbx_time": self.pbx_time,
            "pbx_session": self.session,
        }
        if self.remote is not None:
            fields.update(
                source=f"{self.remote.ip}:{self.remote.port}", remote_ip=self.remote.ip, transport=self.remote.transport
            )
        return fields


def parse_address(text: str) -> Address | None:
    """``IPV4/UDP/203.0.113.9/5060`` (or IPV6/TCP/::1/38000) as an Address."""
    parts = text.split("/")
    if len(parts) < 4:
        return None
    try:
        port = int(parts[-1])
    except ValueError:
        return None
    return Address(parts[1].upper(), "/".join(parts[2:-1]), port)


def security_record(event: SecurityEventReported) -> SecurityRecord:
    failed = event.name in FAILURES
    return SecurityRecord(
        event=event.name,
        failed=failed,
        level=logging.WARNING if failed else logging.DEBUG,
        service=event.service,
        account=event.account_id,
        remote=parse_address(event.remote_address),
        local=parse_address(event.local_address),
        pbx_time=event.event_tv,
        session=event.session_id,
    )


def log_security_event(logger: logging.Logger, record: SecurityRecord) -> None:
    verb = "refused" if record.failed else "reported"
    logger.log(record.level, f"PBX {verb} {record.event}", extra=record.log_fields())
