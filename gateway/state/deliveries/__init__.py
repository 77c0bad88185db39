"""Pending deliveries: items due at a time, claimed by one worker at a time under a lease."""
