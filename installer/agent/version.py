"""The agent's version: the project's, kept here so that the agent ships without the rest."""
__version__ = "0.1.0"
