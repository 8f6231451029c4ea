"""The leaderboard stage: frozen, versioned protocols that rank attribution methods by measured trust.

A protocol (`protocol.py`) is one packaged YAML file with a content hash; a results folder records the hash
in its manifest, and results of different protocols are never mixed. The leaderboard run itself is not
built yet (docs/leaderboard.md).
"""

from gradsum.leaderboard.protocol import (
    PROTOCOL_KEY,
    Protocol,
    builtin_protocols,
    check_protocol,
    load_protocol,
    protocol_hash,
    run_configs,
)

__all__ = [
    "PROTOCOL_KEY",
    "Protocol",
    "builtin_protocols",
    "check_protocol",
    "load_protocol",
    "protocol_hash",
    "run_configs",
]
