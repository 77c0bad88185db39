"""Leases and key slots: which key of an account may take a job, and each key's health."""
