"""A private Asterisk for the PBX tests: Debian unstable's, in the cached chroot, on free ports.

Each instance keeps its configuration, control socket, logs and astdb under its own folder
inside the chroot (``/tmp/seabridge-<id>``), so several test runs share one chroot safely.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from gateway.pbx.dialplan import dialplan_snippet, manager_general_lines, manager_user_section
from tests.support.ports import free_port, port_block

SCRIPT = Path(__file__).with_name("asterisk_chroot.sh")

# Asterisk loads only what the tests use: start-up takes ~1 s instead of ~10 with autoload.
MODULES = """\
res_pjproject res_sorcery_config res_sorcery_memory res_sorcery_astdb res_pjsip res_pjsip_session
chan_pjsip res_pjsip_pubsub res_pjsip_authenticator_digest res_pjsip_outbound_authenticator_digest
res_pjsip_endpoint_identifier_user res_pjsip_registrar res_pjsip_sdp_rtp res_pjsip_header_funcs
res_pjsip_caller_id res_pjsip_nat res_pjsip_rfc3326 res_rtp_asterisk res_timing_timerfd
pbx_config app_dial app_echo app_playback app_stack app_verbose app_senddtmf
func_cut func_strings func_md5 func_channel func_callerid func_logic func_devstate func_extstate
codec_ulaw codec_alaw format_pcm format_wav bridge_simple bridge_native_rtp
res_manager_devicestate
""".split()


@dataclass(frozen=True)
class StaticPhone:
    """An HQ extension whose phone (a sipp UAS in the tests) listens at a fixed port."""

    extension: str
    port: int


@dataclass(frozen=True)
class AsteriskPlan:
    """Everything the generated configuration depends on; the tests read ports and secrets here."""

    sip_port: int
    ami_port: int
    ami_user: str
    ami_secret: str
    trunk_user: str
    trunk_password: str
    trunk_port: int  # where Asterisk sends calls for the gateway (a sipp UAS in the tests)
    phone_password: str
    phones: tuple[StaticPhone, ...]
    registered: tuple[str, ...]  # extensions whose phones register
    rtp: tuple[int, int]

    @classmethod
    def fresh(cls) -> AsteriskPlan:
        return cls(
            sip_port=free_port(),
            ami_port=free_port(),
            ami_user="seabridge-gw",
            ami_secret=secrets.token_urlsafe(18),
            trunk_user="seabridge",
            trunk_password=secrets.token_urlsafe(12),
            trunk_port=free_port(),
            phone_password=secrets.token_urlsafe(12),
            phones=tuple(StaticPhone(str(e), free_port()) for e in (2001, 2002, 2003)),
            registered=("1001",),
            rtp=port_block(200),
        )


def render_configs(plan: AsteriskPlan, base: str) -> dict[str, str]:
    """The configuration files, by name; ``base`` is the instance folder as seen inside the chroot."""
    files: dict[str, str] = {}
    files["asterisk.conf"] = f"""\
[directories]
astcachedir => {base}/cache
astetcdir => {base}/etc
astmoddir => /usr/lib/x86_64-linux-gnu/asterisk/modules
astvarlibdir => /var/lib/asterisk
astdbdir => {base}/db
astkeydir => {base}/keys
astdatadir => /usr/share/asterisk
astagidir => /usr/share/asterisk/agi-bin
astspooldir => {base}/spool
astrundir => {base}/run
astlogdir => {base}/log
astsbindir => /usr/sbin

[options]
documentation_language = en_US
"""
    files["modules.conf"] = modules_conf(MODULES)
    files["pjproject.conf"] = ""  # chan_pjsip refuses to load without it
    files["logger.conf"] = "[general]\n[logfiles]\nmessages.log => notice,warning,error,verbose\n"
    files["rtp.conf"] = f"[general]\nrtpstart = {plan.rtp[0]}\nrtpend = {plan.rtp[1]}\n"
    files["manager.conf"] = (
        f"[general]\nenabled = yes\nport = {plan.ami_port}\nbindaddr = 127.0.0.1\n"
        + manager_general_lines()
        + "\n"
        + manager_user_section(plan.ami_user, plan.ami_secret)
    )
    files["pjsip.conf"] = _pjsip(plan)
    files["extensions.conf"] = _extensions(plan)
    return files


def modules_conf(modules: Iterable[str]) -> str:
    return "[modules]\nautoload = no\n" + "".join(f"load = {m}.so\n" for m in modules)


# sipp's stock-like scenarios expect no re-INVITE mid-call: no direct media between the test
# phones, no connected-line updates, no session timers, no reliable provisional responses.
QUIET_ENDPOINT = "direct_media = no\nsend_connected_line = no\ntimers = no\n100rel = no\n"


def _pjsip(plan: AsteriskPlan) -> str:
    out = [
        f"[transport-udp]\ntype = transport\nprotocol = udp\nbind = 127.0.0.1:{plan.sip_port}\n",
        # The gateway's trunk: it authenticates its calls and its REGISTER as this user.
        f"[{plan.trunk_user}]\ntype = endpoint\ncontext = from-seabridge\ndisallow = all\nallow = ulaw,alaw\n{QUIET_ENDPOINT}"
        f"auth = {plan.trunk_user}-auth\naors = {plan.trunk_user}\n",
        f"[{plan.trunk_user}-auth]\ntype = auth\nauth_type = userpass\nusername = {plan.trunk_user}\n"
        f"password = {plan.trunk_password}\n",
        f"[{plan.trunk_user}]\ntype = aor\nmax_contacts = 1\ncontact = sip:{plan.trunk_user}@127.0.0.1:{plan.trunk_port}\n",
    ]
    for ext in plan.registered:
        out.append(_phone(ext, plan.phone_password, "max_contacts = 1\n"))
    for phone in plan.phones:
        out.append(
            _phone(phone.extension, plan.phone_password, f"contact = sip:{phone.extension}@127.0.0.1:{phone.port}\n")
        )
    return "\n".join(out)


def _phone(ext: str, password: str, aor: str) -> str:
    return (
        f"[{ext}]\ntype = endpoint\ncontext = hq\ndisallow = all\nallow = ulaw,alaw\n{QUIET_ENDPOINT}"
        f"auth = {ext}-auth\naors = {ext}\n"
        f"\n[{ext}-auth]\ntype = auth\nauth_type = userpass\nusername = {ext}\npassword = {password}\n"
        f"\n[{ext}]\ntype = aor\n{aor}"
    )


def _extensions(plan: AsteriskPlan) -> str:
    hints = "".join(f"exten => {p.extension},hint,PJSIP/{p.extension}\n" for p in plan.phones)
    hints += "".join(f"exten => {e},hint,PJSIP/{e}\n" for e in plan.registered)
    return f"""\
[general]
static = yes
writeprotect = yes

{dialplan_snippet()}
[from-seabridge]
; Site users (through the gateway) reach HQ extensions.
exten => _X.,1,Gosub(seabridge-session,s,1)
 same => n,Goto(hq,${{EXTEN}},1)

[hq]
{hints}
exten => 600,1,Gosub(seabridge-session,s,1)
 same => n,Answer()
 same => n,Echo()

exten => _[12]XXX,1,Gosub(seabridge-session,s,1)
 same => n,Dial(PJSIP/${{EXTEN}},30)
 same => n,Hangup()

; HQ dials 8 + a site user: through the gateway's trunk.
exten => _8.,1,Gosub(seabridge-session,s,1)
 same => n,Dial(PJSIP/${{EXTEN:1}}@{plan.trunk_user},30,b(seabridge-session-header^s^1))
 same => n,Hangup()
"""


@dataclass
class AsteriskInstance:
    root: Path  # the chroot
    plan: AsteriskPlan
    log_dir: Path  # outside the chroot: Asterisk's console output, kept with the test's files
    # A test with its own peers or dialplan replaces whole files by name (e.g. "pjsip.conf").
    overrides: dict[str, str] = field(default_factory=dict)
    name: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    process: asyncio.subprocess.Process | None = None

    @property
    def base(self) -> str:
        return f"/tmp/seabridge-{self.name}"

    @property
    def host_base(self) -> Path:
        return self.root / self.base.lstrip("/")

    @property
    def version(self) -> str:
        return (self.root / ".seabridge-version").read_text().splitlines()[0].partition("=")[2]

    def write_configs(self) -> None:
        for sub in ("etc", "cache", "db", "keys", "spool", "run", "log"):
            (self.host_base / sub).mkdir(parents=True, exist_ok=True)
        for name, text in (render_configs(self.plan, self.base) | self.overrides).items():
            (self.host_base / "etc" / name).write_text(text)

    def _asterisk(self, *args: str) -> list[str]:
        return ["chroot", str(self.root), "/usr/sbin/asterisk", "-C", f"{self.base}/etc/asterisk.conf", *args]

    async def start(self, timeout: float = 60) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        console = (self.log_dir / "asterisk-console.log").open("ab")  # noqa: ASYNC230 - opening a local file
        try:
            self.process = await asyncio.create_subprocess_exec(
                *self._asterisk("-f", "-n", "-q"),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=console,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            console.close()
        try:
            await self._wait_booted(timeout)
        except BaseException:
            await self.stop()
            raise

    async def _wait_booted(self, timeout: float) -> None:
        async def booted() -> None:
            # The control socket appears a moment after the process starts; until then -rx fails.
            while True:
                assert self.process is not None
                if self.process.returncode is not None:
                    raise AssertionError(f"asterisk exited with {self.process.returncode}: see {self.log_dir}")
                if (self.host_base / "run" / "asterisk.ctl").exists():
                    out = await self.cli("core waitfullybooted")
                    if "fully booted" in out:
                        return
                await asyncio.sleep(0.05)  # polling a socket file that has no event to wait on

        await asyncio.wait_for(booted(), timeout)

    async def cli(self, command: str, timeout: float = 20) -> str:
        proc = await asyncio.create_subprocess_exec(
            *self._asterisk("-rx", command),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        return out.decode(errors="replace")

    async def stop(self, timeout: float = 15) -> None:
        proc = self.process
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGTERM)  # Asterisk shuts down gracefully on SIGTERM
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    def remove(self) -> None:
        log = self.host_base / "log"
        if log.exists():
            shutil.copytree(log, self.log_dir / "asterisk-logs", dirs_exist_ok=True)
        shutil.rmtree(self.host_base, ignore_errors=True)


async def ensure_chroot() -> Path:
    """Build the chroot if it is missing (minutes, once); a path at once when cached."""
    proc = await asyncio.create_subprocess_exec(
        "bash", str(SCRIPT), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0, f"{SCRIPT} failed ({proc.returncode}); its messages are on stderr above"
    return Path(out.decode().strip().splitlines()[-1])
