"""Extra SIP worker processes (``[sip] workers = N``): started, watched and stopped by the gateway.

Worker 0 is the gateway itself (HTTP, TCP/TLS, trunks' registrations, presence, TV, tunnel).
Workers 1..N-1 run only the SIP service over UDP: registrar, B2BUA, media relay on their
slice of the port range, call records and live billing, sharing the gateway's database,
its Redis (registrations, live spend) and its nonce secret. Each holds a pipe from the
gateway on stdin: if the gateway dies, even by SIGKILL, the pipe closes and the worker
ends its calls and exits, so no orphan keeps the SIP port.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from billing.runtime import start_billing
from gateway.clock import SystemClock
from gateway.config import GatewayConfig
from gateway.errors import StartupError
from gateway.gc_tuning import GcPauses, settle_heap
from gateway.logs import setup_logging
from gateway.metrics import SipMetrics, process_gauges, register_callbacks
from gateway.secrets_store import load_or_create
from gateway.sip.shard import Shard
from gateway.sip_build import advertised, authenticator, open_media_share, open_sip_stores, sip_settings
from gateway.sip_service import SipService
from gateway.sip_worker_link import control_address, same_user
from gateway.trunks import TrunkManager

log = logging.getLogger("seabridge.sip.workers")

# A worker that dies is started again after this long (doubling while it keeps dying).
RESTART_DELAY_S = 1.0
RESTART_DELAY_MAX_S = 30.0
# A scrape or an API call waits this long for a worker's answer, then goes on without it.
ANSWER_WITHIN_S = 2.0


class SipWorkerPool:
    """The gateway's side: one child process per extra worker, restarted if it dies."""

    def __init__(self, config: GatewayConfig, config_path: str | Path | None, run_id: str) -> None:
        if config_path is None:
            raise StartupError("sip.workers > 1 needs the gateway started with --config (the workers read it)")
        self.config = config
        self.config_path = str(config_path)
        self.run_id = run_id
        self._argv: list[str] = []
        self._procs: dict[int, asyncio.subprocess.Process] = {}
        self._watchers: list[asyncio.Task[None]] = []
        self._stopping = False
        # Run when a worker has died, before it is started again (its calls are closed).
        self.on_death: Callable[[], Awaitable[None]] | None = None

    @property
    def alive(self) -> int:
        return sum(1 for p in self._procs.values() if p.returncode is None)

    async def start(self, udp_port: int, stream_ports: dict[str, int], webrtc_agent: tuple[str, int] | None) -> None:
        argv = [
            sys.executable, "-m", "gateway.cli", "sip-worker", "--config", self.config_path,
            "--count", str(self.config.sip.workers), "--run", self.run_id, "--udp-port", str(udp_port),
        ]  # fmt: skip
        for name, port in stream_ports.items():
            argv += ["--stream-port", f"{name}:{port}"]
        if webrtc_agent is not None:
            argv += ["--webrtc-agent", f"{webrtc_agent[0]}:{webrtc_agent[1]}"]
        self._argv = argv
        for index in range(1, self.config.sip.workers):
            await self._spawn(index)
        for index in range(1, self.config.sip.workers):
            self._watchers.append(asyncio.create_task(self._watch(index)))

    async def _spawn(self, index: int) -> None:
        proc = await asyncio.create_subprocess_exec(
            *self._argv, "--index", str(index), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        assert proc.stdout is not None
        # The worker prints "ready" once its SIP socket is bound: until then it cannot take calls.
        line = await proc.stdout.readline()
        if line.strip() != b"ready":
            await proc.wait()
            raise StartupError(f"SIP worker {index} did not start (exit status {proc.returncode}); see its log above")
        self._procs[index] = proc
        log.info("sip worker started", extra={"worker": index, "pid": proc.pid})

    async def _watch(self, index: int) -> None:
        delay = RESTART_DELAY_S
        while not self._stopping:
            status = await self._procs[index].wait()
            if self._stopping:
                return
            log.error("sip worker died: restarting it", extra={"worker": index, "status": status, "delay_s": delay})
            if self.on_death is not None:
                try:
                    await self.on_death()
                except Exception:
                    log.exception("closing the calls of a dead sip worker failed; a restart will close them")
            await asyncio.sleep(delay)
            delay = min(delay * 2, RESTART_DELAY_MAX_S)
            try:
                await self._spawn(index)
            except StartupError as exc:
                log.error("sip worker restart failed", extra={"worker": index, "error": str(exc)})

    async def ask(self, question: str) -> list[tuple[int, bytes]]:
        """Each running worker's answer to ``question`` ("metrics", "calls [tenant]"); a worker
        that does not answer in time (restarting, stuck) is left out."""

        async def one(index: int) -> tuple[int, bytes] | None:
            loop = asyncio.get_running_loop()
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.setblocking(False)
            writer = None
            try:
                async with asyncio.timeout(ANSWER_WITHIN_S):
                    await loop.sock_connect(sock, control_address(self.run_id, index))
                    reader, writer = await asyncio.open_unix_connection(sock=sock)
                    writer.write(question.encode() + b"\n")
                    return index, await reader.read()
            except (OSError, TimeoutError) as exc:
                log.warning(
                    "sip worker did not answer", extra={"worker": index, "question": question, "error": str(exc)}
                )
                return None
            finally:
                if writer is not None:
                    writer.close()
                else:
                    sock.close()

        answers = await asyncio.gather(*(one(i) for i, p in self._procs.items() if p.returncode is None))
        return [a for a in answers if a is not None]

    async def metrics(self) -> list[tuple[str, str]]:
        return [(str(i), text.decode()) for i, text in await self.ask("metrics")]

    async def session_ids(self) -> set[str]:
        return {sid for _, text in await self.ask("sessions") for sid in json.loads(text)}

    async def calls(self, tenant: str | None) -> list[dict[str, object]]:
        question = "calls" if tenant is None else f"calls {tenant}"
        return [call for _, text in await self.ask(question) for call in json.loads(text)]

    async def stop(self, grace: float) -> None:
        """SIGTERM: each worker ends its calls (BYE on both legs, records written), then exits."""
        self._stopping = True
        for task in self._watchers:
            task.cancel()
        for proc in self._procs.values():
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for index, proc in self._procs.items():
            try:
                async with asyncio.timeout(grace + 5.0):
                    await proc.wait()
            except TimeoutError:
                log.error("sip worker did not stop: killing it", extra={"worker": index})
                proc.kill()
                await proc.wait()


# --- the worker's side ------------------------------------------------------------------


async def serve_control(address: str, answer: Callable[[str], Awaitable[bytes]]) -> asyncio.AbstractServer:
    """One question per connection, one answer, then close: worker 0 asks at scrape time."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(address)  # bound here: uvloop rejects abstract-namespace paths
    sock.setblocking(False)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not same_user(writer.transport):
            log.error("refused a sip worker control connection from another user")
            writer.close()
            return
        try:
            question = (await reader.readline()).decode(errors="replace").strip()
            writer.write(await answer(question))
            await writer.drain()
        except Exception:
            log.exception("sip worker control question failed")
        finally:
            writer.close()

    return await asyncio.start_unix_server(handle, sock=sock)


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


async def serve_worker(config: GatewayConfig, args: argparse.Namespace) -> None:
    shard = Shard(args.index, args.count)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: None)  # the gateway alone re-reads its config

    def parent_gone() -> None:
        if not os.read(sys.stdin.fileno(), 4096):
            loop.remove_reader(sys.stdin.fileno())
            stop.set()

    loop.add_reader(sys.stdin.fileno(), parent_gone)
    async with AsyncExitStack() as stack:
        clock = SystemClock()
        secrets = load_or_create(config.data_path, ("sip_nonce_secret",))
        stores = open_sip_stores(config, stack)
        media = await open_media_share(config, shard.index, stack)
        registry = CollectorRegistry()
        relayed = [0]
        settings = sip_settings(
            config,
            advertised(config.sip.bind, config.sip.advertised_address),
            port=args.udp_port,
            shard=shard,
            worker_run=args.run,
            stream_ports=tuple((name, int(port)) for name, port in (s.split(":") for s in args.stream_port)),
        )
        sip = SipService(
            settings,
            stores.users,
            stores.locations,
            stores.cdrs,
            media,
            authenticator(config, secrets.bytes("sip_nonce_secret")),
            SipMetrics(registry),
            clock,
        )
        # Calls to and from trunks, but no registration or OPTIONS probes: worker 0 does those.
        sip.trunks = TrunkManager(config.trunks, sip)
        from gateway.app import rate_calls  # the gateway's module imports this one

        billing = await start_billing(config, recover=False)
        stack.push_async_callback(billing.stop)
        sip.billing = billing.live
        sip.call_listeners.append(rate_calls(billing, None))
        if args.webrtc_agent:
            sip.set_webrtc_agent(_address(args.webrtc_agent))
        await sip.start()
        stack.push_async_callback(sip.stop)
        stack.callback(GcPauses(registry).close)
        register_callbacks(
            registry,
            gauges=process_gauges(loop),
            counters={"seabridge_rtp_packets_relayed": ("RTP/RTCP packets relayed", lambda: float(relayed[0]))},
        )

        async def answer(question: str) -> bytes:
            if question == "metrics":
                relayed[0] = await media.total_packets_relayed()
                return generate_latest(registry)
            if question == "sessions":
                return json.dumps(sorted(sip.session_ids())).encode()
            if question == "calls" or question.startswith("calls "):
                return json.dumps(sip.calls_snapshot(question[6:] or None)).encode()
            return b""

        control = await serve_control(control_address(args.run, shard.index), answer)
        stack.callback(control.close)
        settle_heap()
        print("ready", flush=True)
        log.info("sip worker running", extra={"worker": shard.index, "port": sip.local_port})
        await stop.wait()
        await sip.drain(config.sip.shutdown_grace_s)


def run_worker(config: GatewayConfig, args: argparse.Namespace) -> int:
    setup_logging(config.log.level, config.log.format, stamp={"worker": args.index})
    try:
        import uvloop

        uvloop.run(serve_worker(config, args))
    except ImportError:
        asyncio.run(serve_worker(config, args))
    return 0
