"""Reading the kernel command line: where the agent learns its plan URL."""

from __future__ import annotations

import shlex

from installer.agent import rules

PLAN_KEY = rules.PLAN_ARG


def parse(text: str) -> dict:
    """Kernel parameters as a dict; a bare flag maps to ''."""
    params = {}
    for word in shlex.split(text):
        key, _, value = word.partition("=")
        params[key] = value
    return params


def plan_url(text: str) -> str | None:
    return parse(text).get(PLAN_KEY) or None
