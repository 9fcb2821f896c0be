"""SIP (RFC 3261) as sans-I/O cores: messages, parsing, transactions, dialogs, digest, SDP.

Nothing in this package touches a socket, the event loop or the clock: callers pass
bytes and ``now`` (monotonic seconds) in and get messages, bytes and deadlines out.
"""
