"""HQ PBX (Asterisk) integration over AMI: call records, click-to-call, presence, security events.

Build with ``service.build_pbx_service``; add its HTTP routes with ``api.add_pbx_routes``.
docs/pbx.md has the design and what the PBX's administrator must configure.
"""
