"""ganeti-installer: turns bare PCs into Ganeti nodes from one cluster file."""

__version__ = "0.1.0"
