"""Media: RTP/RTCP values and the gateway's RTP relay.

- ``rtp``: RTP, RTCP and RFC 4733 telephone-event packets as frozen values.
- ``relay_core``: the relay's sans-I/O rules (latching, strict source, routing, counters, timeouts).
- ``ports``: RTP/RTCP port pairs from the configured range.
- ``relay_engine``: one event loop's sockets feeding the core.
- ``relay``: ``RelayManager`` / ``RelaySession``, the API the B2BUA calls.
- ``relay_pool``, ``relay_worker``, ``relay_wire``: the optional worker processes.
- ``relay_config``: ``RelayConfig`` and its mapping from the gateway's ``[media]`` section.
"""
