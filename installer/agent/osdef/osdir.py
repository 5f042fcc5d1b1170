"""The OS definition as files: what the plan writes on every node under
/usr/share/ganeti/os/image (a directory Debian's Ganeti searches), the package itself under
lib/ there, and the settings under /etc (the paper's places)."""

from __future__ import annotations

import os
from typing import Dict, List, Tuple

from . import settings

OS_DIR = "/usr/share/ganeti/os/image"
LIB = f"{OS_DIR}/lib/osdef"
HERE = os.path.dirname(os.path.abspath(__file__))
MODULES = ("__init__.py", "settings.py", "image.py", "disk.py", "commands.py")
API_VERSION = "20\n"
SCRIPT = """#!/usr/bin/python3
# Ganeti OS API script `{command}` of the image OS definition (ganeti-installer).
import sys
sys.path.insert(0, "{lib}")
from osdef import commands
sys.exit(commands.main("{command}", sys.argv[1:]))
"""

File = Tuple[str, str, str]         # path, mode, content


def scripts() -> List[File]:
    """The OS directory: the API scripts, version, parameters and the package they run."""
    out: List[File] = [(f"{OS_DIR}/{c}", "0755",
                        SCRIPT.format(command=c, lib=os.path.dirname(LIB)))
                       for c in ("create", "export", "import", "rename", "verify")]
    out += [(f"{OS_DIR}/ganeti_api_version", "0644", API_VERSION),
            (f"{OS_DIR}/parameters.list", "0644", "")]
    for name in MODULES:
        with open(os.path.join(HERE, name), encoding="utf-8") as f:
            out.append((f"{LIB}/{name}", "0644", f.read()))
    return out


def configuration(variants: Dict[str, Dict[str, str]]) -> List[File]:
    """The settings files for the variants (name -> settings that differ from the
    defaults), in variants.list order. Ganeti reads the OS directory's variants.list; the
    paper's copy under /etc is the one create checks a variant against; both are written."""
    listing = "".join(f"{v}\n" for v in variants)
    out: List[File] = [(f"/etc/{settings.DEFAULTS_FILE}", "0644", settings.defaults_text()),
                       (f"/etc/{settings.VARIANTS_LIST}", "0644", listing),
                       (f"{OS_DIR}/variants.list", "0644", listing)]
    out += [(f"/etc/{settings.VARIANTS_DIR}/{v}.conf", "0644", settings.conf_text(v, values))
            for v, values in variants.items()]
    return out
