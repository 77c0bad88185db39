"""Async image jobs (SPEC 4.6): records, the runner, and takeover of a dead replica's jobs.

The modules are imported by name (`gateway.jobs.service`, …): the upstreams import
`gateway.jobs.accepted`, so this package itself imports nothing.
"""
