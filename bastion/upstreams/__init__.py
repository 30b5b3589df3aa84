"""Upstream pools: several targets behind one API, chosen, probed, ejected and retried (sans-IO).

The socket side (health probes, the forwarding loop) is `bastion.server.pool`.
"""
