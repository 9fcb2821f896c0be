"""The ``[pbx]`` configuration section: the HQ Asterisk the gateway watches and drives over AMI."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from gateway.configschema import InvalidField, bounds
from gateway.pbx.dialplan import SESSION_VARIABLE

# Values that end up inside AMI actions or Asterisk's dialplan: plain names only.
_NAME = re.compile(r"^[A-Za-z0-9_.+-]{1,64}$")
_VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_PREFIX = re.compile(r"^[0-9*#]{0,8}$")


@dataclass(frozen=True)
class PbxConfig:
    enabled: bool = False
    ami_host: str = "127.0.0.1"
    ami_port: int = field(default=5038, metadata=bounds(1, 65535))
    ami_username: str = "seabridge"
    # Empty: generated at first start (data_dir/secrets.toml, "pbx_ami_secret"); give it to the
    # PBX's manager.conf (`seabridge pbx asterisk-config` prints the lines to paste).
    ami_secret: str = ""
    ami_tls: bool = False
    ami_ping_interval_s: int = field(default=20, metadata=bounds(2, 600))
    reconnect_max_s: int = field(default=30, metadata=bounds(1, 600))
    session_variable: str = SESSION_VARIABLE
    # The gateway's endpoint in the PBX's pjsip.conf, the billing account HQ's calls to sites
    # are charged to, and the tenant/site those calls belong to.
    trunk_endpoint: str = "seabridge"
    trunk_account: str = ""
    tenant: str = ""
    site: str = "hq"
    # Click-to-call: the HQ phone is rung first, then the call continues at hq_context,
    # extension site_dial_prefix + the site user (the prefix HQ dials to reach sites).
    hq_context: str = "hq"
    site_dial_prefix: str = "8"
    ring_timeout_s: int = field(default=30, metadata=bounds(5, 300))
    # Hint contexts whose extension states are shown to site users.
    presence_contexts: tuple[str, ...] = ("hq",)

    def __post_init__(self) -> None:
        for key in ("ami_username", "trunk_endpoint", "hq_context"):
            if not _NAME.match(getattr(self, key)):
                raise InvalidField(key, "letters, digits and _ . + - only (1 to 64 of them)")
        for context in self.presence_contexts:
            if not _NAME.match(context):
                raise InvalidField("presence_contexts", f"{context!r}: letters, digits and _ . + - only")
        if not _VARIABLE.match(self.session_variable):
            raise InvalidField("session_variable", "a dialplan variable name (letters, digits, _)")
        if not _PREFIX.match(self.site_dial_prefix):
            raise InvalidField("site_dial_prefix", "up to 8 of 0-9 * #")
        if self.enabled:
            if not self.tenant:
                raise InvalidField("tenant", "pbx.enabled needs the tenant the PBX belongs to")
            if not self.trunk_account:
                raise InvalidField("trunk_account", "pbx.enabled needs the account HQ's calls to sites are charged to")
