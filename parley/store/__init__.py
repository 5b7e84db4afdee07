"""Storage behind one interface (:class:`parley.store.base.Store`)."""

from parley.store.base import DeviceRecord, NewEnvelope, Registration, Store, Submitted

__all__ = ["DeviceRecord", "NewEnvelope", "Registration", "Store", "Submitted"]
