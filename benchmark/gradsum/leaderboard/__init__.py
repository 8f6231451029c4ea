"""The leaderboard stage: frozen, versioned protocols that rank attribution methods by measured trust.

A protocol (`protocol.py`) is one packaged YAML file with a content hash; a results folder records the hash
in its manifest, and results of different protocols are never mixed. `run_leaderboard` (`runner.py`,
`gradsum leaderboard`) runs a protocol once per training seed and ranks the methods over the seeds
(docs/leaderboard.md).
"""

from gradsum.contract import PROTOCOL_KEY
from gradsum.leaderboard.protocol import (
    Protocol,
    builtin_protocols,
    check_protocol,
    load_protocol,
    protocol_hash,
    run_configs,
)
from gradsum.leaderboard.runner import add_methods, assemble, protocol_methods, run_leaderboard

__all__ = [
    "PROTOCOL_KEY",
    "Protocol",
    "add_methods",
    "assemble",
    "builtin_protocols",
    "check_protocol",
    "load_protocol",
    "protocol_hash",
    "protocol_methods",
    "run_configs",
    "run_leaderboard",
]
