"""The only package that touches sockets, asyncio and TLS."""
