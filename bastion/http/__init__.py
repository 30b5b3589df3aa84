"""Sans-IO HTTP helpers: framing checks, header hygiene, problem documents. No sockets here."""
