"""Admission counters: a team's window, leases, daily images and monthly spend, by name."""
