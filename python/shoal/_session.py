"""This process's place in a session: where the broker executable is, and what a forked child
must do. Imported once by ``shoal`` for these effects; no connection is made at import."""

from __future__ import annotations

import os

from . import _shoal

# The broker executable ships inside the package; C++ callers use SHOAL_BROKER instead.
_broker = os.path.join(os.path.dirname(__file__), "_bin", "shoal-broker")
if os.path.exists(_broker) and not os.environ.get("SHOAL_BROKER"):
    _shoal.set_broker_path(_broker)

# A forked child must not share its parent's broker connection (those are the parent's
# references): reconnect and re-register the inherited mappings right after fork.
os.register_at_fork(after_in_child=_shoal.after_fork_child)
