"""Joining booted nodes into Ganeti from the serving host: SSH with pinned keys, pexpect, gnt-*."""
