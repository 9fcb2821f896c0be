"""Two `seabridge run` gateways, a site and HQ, trunked to each other through their tunnel.

The site reaches HQ with digest credentials (it registers as user ``kinshasa@hq``); HQ's
calls reach the site by peering (the site's trunk identifies HQ by the tunnel node it
comes from). The same configuration serves the loopback test and the namespace test.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.tunnel import pki
from tests.support.gateway import GatewayProcess

from .pkihelp import TestCa

SITE_TRUNK_PASSWORD = "site-trunk-pass-9"


def install_identity(gw: GatewayProcess, ca: TestCa, node: str) -> None:
    folder = gw.data_dir / "tunnel"
    folder.mkdir(parents=True, exist_ok=True)
    identity = ca.identity(node)
    pki.write_public(folder / "ca.pem", pki.cert_pem(identity.ca))
    pki.write_public(folder / "node.pem", pki.cert_pem(identity.cert))
    pki.write_private(folder / "node.key", pki.key_pem(identity.key))


def site_config(tunnel: str, hq_node: str = "hq", extra: str = "") -> str:
    return f"""
[[tenants]]
domain = "acme"
digest_algorithms = ["MD5"]
dial_plan = [{{ prefix = "8", trunk = "hq", strip = 1 }}]

[[trunks]]
name = "hq"
tenant = "acme"
tunnel_peer = "{hq_node}"
domain = "hq"
username = "kinshasa"
password = "{SITE_TRUNK_PASSWORD}"
register = true
account = "hq-pbx@acme"
options_interval_s = 1
t1_ms = 500
t2_ms = 4000
{tunnel}
{extra}
"""


def hq_config(tunnel: str, site_node: str = "site1", extra: str = "") -> str:
    return f"""
[[tenants]]
domain = "hq"
digest_algorithms = ["MD5"]
dial_plan = [{{ prefix = "7", trunk = "site", strip = 1 }}]

[[trunks]]
name = "site"
tenant = "hq"
tunnel_peer = "{site_node}"
domain = "acme"
# The site authenticates with digest (it registered as kinshasa); not identified by the tunnel.
inbound = false
options_interval_s = 0
t1_ms = 500
t2_ms = 4000
{tunnel}
{extra}
"""


@dataclass
class Pair:
    site: GatewayProcess
    hq: GatewayProcess

    def add_users(self) -> None:
        self.site.add_user("alice@acme", "kinshasa", "alice-pass-1", number="2001")
        self.hq.add_user("ceo@hq", "beijing", "ceo-pass-100", number="100")
        self.hq.add_user("kinshasa@hq", "kinshasa", SITE_TRUNK_PASSWORD)


def trunk_pair(site: GatewayProcess, hq: GatewayProcess, ca: TestCa, site_node: str) -> Pair:
    install_identity(site, ca, site_node)
    install_identity(hq, ca, "hq")
    site.write_config()
    hq.write_config()
    pair = Pair(site, hq)
    pair.add_users()
    return pair
