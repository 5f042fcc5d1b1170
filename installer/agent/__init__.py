"""The node-side agent. Runs in the netboot image (or at first boot of a d-i install).

Node side: standard library, pyudev and requests only, Python 3.9 syntax, so that the
stock-installer path can run it on Debian 11 and later.
"""
