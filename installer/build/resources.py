"""Where the build side finds the data trees it renders from: `elements/`, `hooks/`, `preseed/`.

They sit at the top of a clone (the product's layout). The package reaches them through the
links in `installer/build/data/`, which a built wheel carries as plain files, so an installed
(non-editable) ganeti-installer builds and renders as a clone does.
"""
from __future__ import annotations

import os

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")
ELEMENTS = os.path.join(DATA, "elements")
HOOKS = os.path.join(DATA, "hooks", "agent")
PRESEED = os.path.join(DATA, "preseed")
TEMPLATES = os.path.join(HERE, "templates")
FIRSTBOOT = os.path.join(HERE, "firstboot")
