"""Job records and their leases: which replica runs a job, and who may take it over."""
