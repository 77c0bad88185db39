"""Lease-locks: one holder at a time for work only one replica should do."""
