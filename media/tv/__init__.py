"""Domestic TV at sites: channel ingest, HLS and HTTP-TS outputs, M3U + EPG, per-tenant tokens.

The pure cores (``ts``, ``rebase``, ``segmenter``, ``window``, ``hlsparse``, ``failover``,
``demand``, ``tokens``, ``m3u``, ``epg``) take bytes, events and ``now`` and never touch a
socket, a thread or a clock. The thin layers (``sources``, ``worker``, ``channel``,
``service``, ``web``) do the I/O.
"""


class TvError(Exception):
    """Root of every error the TV package raises."""
