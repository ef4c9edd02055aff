"""The control socket: how consoles and the CLI reach a running service (DESIGN.md, roles)."""
