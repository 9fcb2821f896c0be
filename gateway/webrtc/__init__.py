"""The browser phone: a page, a signalling WebSocket, and WebRTC media bridged to SIP.

Each signed-in browser is a SIP user agent towards the gateway's own SIP
service (``sip_ua``), so the registrar, the B2BUA's forking and tenant checks
and call records apply to browsers as they do to desk phones. Media: aiortc
terminates ICE and DTLS-SRTP with the browser; the SIP side is plain RTP to the
gateway's relay, forwarded without re-encoding when both ends speak the same
codec, transcoded Opus <-> G.711 when they do not. ``gateway.webrtc.service``
builds it all; this package's ``__init__`` stays light so the config schema
can import ``gateway.webrtc.config`` without pulling in aiortc.
"""
