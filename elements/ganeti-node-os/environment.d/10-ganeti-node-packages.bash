if [ -z "${GANETI_NODE_PACKAGES:-}" ]; then
    echo "ganeti-node-os: GANETI_NODE_PACKAGES is empty: name the node packages" >&2
    exit 1
fi
export GANETI_NODE_PACKAGES
