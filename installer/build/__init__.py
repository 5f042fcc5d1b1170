"""The build side: images, node plans, the PXE tree and dnsmasq configuration, all files
under OUTDIR."""
