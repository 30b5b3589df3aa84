"""Bastion: an API security gateway. Security is declared once per API class and enforced on every route."""

__version__ = "0.1.0"
