"""The master side: `serve` (HTTP API, state, dnsmasq, PXE handoff) and the join of nodes."""
