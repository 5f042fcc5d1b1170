"""Reading the kernel command line: where the agent learns its plan URL."""

from __future__ import annotations

import shlex

from installer.agent import rules

PLAN_KEY = rules.PLAN_ARG
WAIT_KEY = "installer.wait"     # seconds a fetch waits for the master (retry.LIMIT if unset)


def parse(text: str) -> dict:
    """Kernel parameters as a dict; a bare flag maps to ''."""
    params = {}
    for word in shlex.split(text):
        key, _, value = word.partition("=")
        params[key] = value
    return params


def plan_url(text: str) -> str | None:
    return parse(text).get(PLAN_KEY) or None


def wait_limit(text: str) -> float | None:
    """installer.wait=<seconds>; None when unset. ValueError naming the argument and its fix
    when it is not a number of seconds."""
    value = parse(text).get(WAIT_KEY)
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0 or seconds == float("inf"):
        raise ValueError(f"{WAIT_KEY}={value} on the kernel command line is not a number of "
                         f"seconds: write e.g. {WAIT_KEY}=3600, or leave it out (30 minutes)")
    return seconds
