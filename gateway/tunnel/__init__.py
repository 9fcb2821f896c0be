"""Encrypted inter-gateway tunnels: a TLS 1.3 control channel and an AEAD datagram media channel.

Pure cores (no sockets, no clock): ``frame``, ``aead``, ``replay``, ``keys``, ``classes``,
``shaper``, ``pathmon``, ``arq``, ``routing``, ``link``, ``control``, ``tls``, ``messaging``,
``pki``. Thin asyncio layers: ``udp``, ``controlconn``, ``service``. See docs/tunnel.md.
"""
