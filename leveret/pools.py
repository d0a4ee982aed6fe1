"""``leveret.pools``: the high-level layer's pools, under kombu's module name.

``from leveret import pools`` then ``pools.connections[conn]``, ``pools.producers[conn]``,
``pools.set_limit(n)``, ``pools.reset()``... as with ``kombu.pools``.  Everything here is
:mod:`leveret.highlevel.pools`; see there.
"""

from .highlevel.pools import *  # noqa: F401,F403
from .highlevel.pools import __all__ as __all__  # noqa: F401
