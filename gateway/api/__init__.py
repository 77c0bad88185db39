"""Thin HTTP handlers: decode, call the service, encode."""
