"""Record the AMI byte streams under tests/pbx/fixtures from a real Asterisk (not run by pytest).

    PYTHONPATH=. python -m tests.pbx.record_ami_fixtures

Starts a private Asterisk in the cached chroot, logs in over a raw socket, and saves what
Asterisk sends during each scene: a trunk call carrying a Session-ID, a failed registration,
a click-to-call between two HQ phones, an HQ call out through the trunk, a shutdown.
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
from pathlib import Path

from tests.pbx.asterisk import AsteriskInstance, AsteriskPlan, ensure_chroot
from tests.support.sipp import Sipp

FIXTURES = Path(__file__).with_name("fixtures")
SIPP = Path(__file__).with_name("sipp")
SESSION = "4f6b0c2a9d8e4b1c8a7f6e5d4c3b2a10"


class Recorder:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.buffer = bytearray()

    async def read_until(self, needle: bytes, timeout: float = 20) -> None:
        async def loop() -> None:
            while needle not in self.buffer:
                chunk = await self.reader.read(65536)
                if not chunk:
                    raise EOFError
                self.buffer += chunk

        await asyncio.wait_for(loop(), timeout)

    async def settle(self, quiet: float = 1.0) -> None:
        """Read until Asterisk has been silent for ``quiet`` seconds."""
        while True:
            try:
                chunk = await asyncio.wait_for(self.reader.read(65536), quiet)
            except TimeoutError:
                return
            if not chunk:
                return
            self.buffer += chunk

    def take(self) -> bytes:
        data = bytes(self.buffer)
        self.buffer.clear()
        return data

    def send(self, text: str) -> None:
        self.writer.write(text.replace("\n", "\r\n").encode() + b"\r\n")


async def main() -> None:
    FIXTURES.mkdir(exist_ok=True)
    root = await ensure_chroot()
    work = Path(tempfile.mkdtemp(prefix="ami-record-"))
    plan = AsteriskPlan.fresh()
    ast = AsteriskInstance(root, plan, work / "asterisk")
    ast.write_configs()
    await ast.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", plan.ami_port)
        rec = Recorder(reader, writer)
        await rec.read_until(b"\r\n")
        rec.send("Action: Challenge\nActionID: 1\nAuthType: MD5\n")
        await rec.read_until(b"Challenge: ")
        await rec.read_until(b"\r\n\r\n")
        challenge = rec.buffer.split(b"Challenge: ")[1].split(b"\r\n")[0].decode()
        key = hashlib.md5((challenge + plan.ami_secret).encode()).hexdigest()
        rec.send(f"Action: Login\nActionID: 2\nAuthType: MD5\nUsername: {plan.ami_user}\nKey: {key}\n")
        await rec.read_until(b"ActionID: 2")
        await rec.settle()
        (FIXTURES / "ami_login.bin").write_bytes(rec.take())

        uac = Sipp(
            ("127.0.0.1", plan.sip_port),
            work / "uac",
            str(SIPP / "uac_session.xml"),
            keys={"user": plan.trunk_user, "password": plan.trunk_password, "session": SESSION, "hold": "500"},
            extra=("-s", "600"),
        )
        result = await uac.run(60)
        assert result.ok, result.output
        await rec.settle()
        (FIXTURES / "ami_trunk_call.bin").write_bytes(rec.take())

        bad = Sipp(
            ("127.0.0.1", plan.sip_port),
            work / "bad",
            str(SIPP / "register_wrong.xml"),
            keys={"user": "1001", "password": "not-the-password"},
        )
        assert (await bad.run(60)).ok
        unknown = Sipp(
            ("127.0.0.1", plan.sip_port),
            work / "unknown",
            str(SIPP / "register_wrong.xml"),
            keys={"user": "9999", "password": "guess"},
        )
        assert (await unknown.run(60)).ok
        # A login to AMI with a wrong secret is reported to the sessions that read security events.
        r2, w2 = await asyncio.open_connection("127.0.0.1", plan.ami_port)
        await r2.readline()
        w2.write(f"Action: Login\r\nUsername: {plan.ami_user}\r\nSecret: wrong\r\n\r\n".encode())
        await r2.readuntil(b"\r\n\r\n")
        w2.close()
        await rec.settle()
        (FIXTURES / "ami_security.bin").write_bytes(rec.take())

        phones = {
            p.extension: Sipp(
                ("127.0.0.1", plan.sip_port),
                work / p.extension,
                str(SIPP / "uas_answer.xml"),
                keys={"ring": "300"},
                local_port=p.port,
            )
            for p in plan.phones[:2]
        }
        for phone in phones.values():
            await phone.start()
        rec.send(
            "Action: Originate\nActionID: 3\nChannel: PJSIP/2001\nContext: hq\nExten: 2002\nPriority: 1\n"
            "CallerID: Click <2001>\nTimeout: 20000\nAsync: true\n"
        )
        await rec.read_until(b"Event: DialEnd")
        await rec.settle(1.5)
        await ast.cli("channel request hangup all")
        for phone in phones.values():
            assert (await phone.wait(30)).ok
        await rec.settle()
        (FIXTURES / "ami_originate.bin").write_bytes(rec.take())

        trunk = Sipp(
            ("127.0.0.1", plan.sip_port),
            work / "trunk",
            str(SIPP / "uas_answer.xml"),
            keys={"ring": "200"},
            local_port=plan.trunk_port,
        )
        await trunk.start()
        hq = Sipp(
            ("127.0.0.1", plan.sip_port),
            work / "hq",
            str(SIPP / "uas_answer.xml"),
            keys={"ring": "100"},
            local_port=plan.phones[2].port,
        )
        await hq.start()
        rec.send(
            "Action: Originate\nActionID: 4\nChannel: PJSIP/2003\nContext: hq\nExten: 8alice\nPriority: 1\n"
            "Timeout: 20000\nAsync: true\n"
        )
        await rec.read_until(b"Event: DialEnd")
        await rec.settle(1.5)
        await ast.cli("channel request hangup all")
        assert (await trunk.wait(30)).ok
        assert (await hq.wait(30)).ok
        await rec.settle()
        (FIXTURES / "ami_hq_to_site.bin").write_bytes(rec.take())

        await ast.stop()
        await rec.settle()
        (FIXTURES / "ami_shutdown.bin").write_bytes(rec.take())
        writer.close()
    finally:
        await ast.stop()
        ast.remove()
    print(f"recorded from {ast.version}; work files in {work}")


if __name__ == "__main__":
    asyncio.run(main())
