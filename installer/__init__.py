"""ganeti-installer: turns bare PCs into Ganeti nodes from one cluster file.

Three sides, one package each, imports running one way (docs/architecture.md):
cli → build, master → cluster; build → agent (the plan schema, shipping the agent);
agent → nothing else of the project.
"""
from installer.agent.version import __version__

__all__ = ["__version__"]
