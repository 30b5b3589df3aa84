"""The demo: an upstream, an identity provider and the gateway, all on 127.0.0.1."""
