"""The `image` OS definition (Ganeti OS API 20): our own stand-in for ganeti-instance-image,
which the paper installs from its authors' site and Debian does not carry.

Node-side and self-contained: standard library only, Python 3.9, relative imports, so the plan
can write it to /usr/share/ganeti/os/image/lib/osdef/ and the API scripts beside it run it
with the node's python3. Its documented behaviour (settings, variants, `cd` with CDINSTALL
and NOMOUNT) is the spec; none of its code is used.
"""
