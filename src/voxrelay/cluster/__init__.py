"""Several nodes behind one load balancer, sharing Redis (``VOXRELAY_REDIS_URL``).

- ``leases``: who holds which conversation and session, with leases in Redis.
- ``bus``: frames between members over Redis pub/sub.
- ``members``: ``Cluster``, this member's ``Elsewhere``.
"""

from voxrelay.cluster.members import Cluster

__all__ = ["Cluster"]
