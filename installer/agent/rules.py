"""Rules the node and the build host must agree on, kept once, here, where the agent (which
imports nothing else of the project) can read them and every other side may import them."""
from __future__ import annotations

import re

# A MAC as plans, state and file names carry it: six lower-case hex bytes, colon separated.
MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
# The same, or dashed as PXE loaders and the plan URL write it (52-54-00-...).
MAC_ANY = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}|[0-9a-f]{2}(-[0-9a-f]{2}){5}")
MIN_VG_BYTES = 20 << 30          # Ganeti refuses a smaller volume group at gnt-cluster init
PLAN_ARG = "installer.plan"      # the kernel argument that names the plan's URL
