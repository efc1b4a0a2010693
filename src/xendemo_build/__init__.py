"""xendemo: build Xen Demo CD style live CDs."""

__version__ = "0.1.0"
