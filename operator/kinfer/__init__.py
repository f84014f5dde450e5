"""kinfer: inference services and open-loop load experiments on Kubernetes, or on one machine.

Parts (each behind its own pip extra, imported lazily by :mod:`kinfer.cli`):
``api`` (the CRD models, single source of truth), ``server`` (model server), ``loadgen``
(load generator), ``controller`` (kopf operator), ``local`` (``kinfer run``).
"""

__version__ = "0.1.0"
