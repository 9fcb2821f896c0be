"""`seabridge pki ...` and `seabridge tunnel run`.

The site's key never leaves the site: ``pki request`` makes the key and a CSR there,
the CSR travels to the CA (any channel: it holds no secret), ``pki issue`` signs it,
and ``pki install`` puts the certificate beside the key after checking they match.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from gateway.cli import CliError, add_config_option
from gateway.config import load_config
from gateway.tunnel import pki
from gateway.tunnel.errors import PkiError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("pki", help="tunnel certificates", description="The tunnel's private CA and node certificates.")
    actions = p.add_subparsers(dest="pki_command", metavar="ACTION", required=True)

    init = actions.add_parser("init-ca", help="create the CA", description="Create the CA key and certificate.")
    init.add_argument("--name", default="Seabridge tunnel CA", help="CA common name")
    init.add_argument("--days", type=int, default=3650)
    init.add_argument("--out", help="directory for ca.pem and ca.key (default: DATA_DIR/tunnel)")
    add_config_option(init)
    init.set_defaults(handler=cmd_init_ca)

    req = actions.add_parser(
        "request",
        help="make this node's key and CSR",
        description="Make a key (kept here) and a CSR to send to the CA.",
    )
    req.add_argument("node", nargs="?", help="node name (default: [tunnel] node or node_name)")
    req.add_argument("--csr", help="where to write the CSR (default: DATA_DIR/tunnel/NODE.csr)")
    add_config_option(req)
    req.set_defaults(handler=cmd_request)

    issue = actions.add_parser("issue", help="sign a node's CSR", description="Sign a CSR for node SITE with the CA.")
    issue.add_argument("site", help="the node name the certificate is for (must match the CSR)")
    issue.add_argument("--csr", required=True, help="the node's CSR file")
    issue.add_argument("--days", type=int, default=365)
    issue.add_argument("--out", help="certificate file (default: SITE.pem beside the CSR)")
    issue.add_argument("--ca-cert", help="CA certificate (default: [tunnel] ca)")
    issue.add_argument("--ca-key", help="CA key (default: [tunnel] ca_key, else ca.key beside the CA certificate)")
    add_config_option(issue)
    issue.set_defaults(handler=cmd_issue)

    install = actions.add_parser(
        "install", help="install this node's certificate", description="Check a certificate and install it."
    )
    install.add_argument("certificate", help="certificate file issued by the CA")
    add_config_option(install)
    install.set_defaults(handler=cmd_install)

    show = actions.add_parser("show", help="describe a certificate", description="Print a certificate's subject.")
    show.add_argument("certificate", nargs="?", help="file (default: this node's certificate)")
    add_config_option(show)
    show.set_defaults(handler=cmd_show)

    t = sub.add_parser("tunnel", help="run the tunnel alone", description="Inter-gateway tunnels.")
    tactions = t.add_subparsers(dest="tunnel_command", metavar="ACTION", required=True)
    run = tactions.add_parser("run", help="run only the tunnel (e.g. on a hub)", description="Run the tunnel service.")
    add_config_option(run)
    run.set_defaults(handler=cmd_tunnel_run)


def _files(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from gateway.tunnel.run import identity_files, node_name

    config = load_config(args.config)
    return config, identity_files(config), node_name(config)


def cmd_init_ca(args: argparse.Namespace) -> int:
    config, files, _ = _files(args)
    out = Path(args.out) if args.out else files.ca.parent
    key_path, cert_path = out / "ca.key", out / "ca.pem"
    if key_path.exists():
        raise CliError(f"{key_path} exists: refusing to replace a CA (every node trusts it)")
    key, cert = pki.init_ca(args.name, args.days)
    pki.write_private(key_path, pki.key_pem(key))
    pki.write_public(cert_path, pki.cert_pem(cert))
    print(f"CA {args.name!r}: certificate {cert_path} (give to every node), key {key_path} (keep secret)")
    return 0


def cmd_request(args: argparse.Namespace) -> int:
    config, files, default_node = _files(args)
    node = args.node or default_node
    try:
        pki.check_node_name(node)
        key = pki.load_key(files.key) if files.key.exists() else None
        key, csr = pki.request(node, key)
    except PkiError as exc:
        raise CliError(str(exc)) from None
    if not files.key.exists():
        pki.write_private(files.key, pki.key_pem(key))
    csr_path = Path(args.csr) if args.csr else files.key.parent / f"{node}.csr"
    pki.write_public(csr_path, csr.public_bytes(serialization.Encoding.PEM))
    print(f"key {files.key} (stays here); send {csr_path} to the CA: seabridge pki issue {node} --csr {csr_path.name}")
    return 0


def cmd_issue(args: argparse.Namespace) -> int:
    config, files, _ = _files(args)
    ca_cert_path = Path(args.ca_cert) if args.ca_cert else files.ca
    if args.ca_key:
        ca_key_path = Path(args.ca_key)
    elif config.tunnel.ca_key:
        ca_key_path = Path(config.tunnel.ca_key)
        if not ca_key_path.is_absolute():
            ca_key_path = config.data_path / ca_key_path
    else:
        ca_key_path = ca_cert_path.with_name("ca.key")
    csr_path = Path(args.csr)
    try:
        csr = pki.load_csr(csr_path)
        cert = pki.issue(pki.load_key(ca_key_path), pki.load_cert(ca_cert_path), csr, args.site, days=args.days)
    except PkiError as exc:
        raise CliError(str(exc)) from None
    out = Path(args.out) if args.out else csr_path.with_name(f"{args.site}.pem")
    pki.write_public(out, pki.cert_pem(cert))
    print(f"issued {out} for {args.site}, valid until {cert.not_valid_after_utc:%Y-%m-%d} UTC")
    return 0


def cmd_install(args: argparse.Namespace) -> int:
    config, files, node = _files(args)
    try:
        cert = pki.load_cert(Path(args.certificate))
        pki.verify_issued_by(cert, pki.load_cert(files.ca))
        if pki.cert_node(cert) != node:
            raise PkiError(f"certificate is for {pki.cert_node(cert)!r}, this node is {node!r}")
        if cert.public_key() != pki.load_key(files.key).public_key():
            raise PkiError(f"certificate does not match this node's key {files.key}")
    except PkiError as exc:
        raise CliError(str(exc)) from None
    files.cert.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(args.certificate, files.cert)
    print(f"installed {files.cert} for {node}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    config, files, _ = _files(args)
    try:
        cert = pki.load_cert(Path(args.certificate) if args.certificate else files.cert)
    except PkiError as exc:
        raise CliError(str(exc)) from None
    print(f"subject:  {cert.subject.rfc4514_string()}")
    print(f"issuer:   {cert.issuer.rfc4514_string()}")
    print(f"valid:    {cert.not_valid_before_utc:%Y-%m-%d %H:%M} .. {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    print(f"serial:   {cert.serial_number:x}")
    return 0


def cmd_tunnel_run(args: argparse.Namespace) -> int:
    from gateway.tunnel.run import serve_forever

    config = load_config(args.config)
    if not config.tunnel.enabled:
        raise CliError("[tunnel] enabled = false in this configuration")
    logging.basicConfig(level=config.log.level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        asyncio.run(serve_forever(config, args.config))
    except PkiError as exc:
        raise CliError(str(exc)) from None
    return 0
