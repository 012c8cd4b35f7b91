"""smithers-time-travel: durable, auditable time travel for Smithers runs on Temporal."""

__version__ = "0.1.0"
