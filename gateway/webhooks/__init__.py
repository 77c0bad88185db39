"""Signed webhooks for ended jobs (SPEC 4.6): URL rules, signing, and the delivery worker."""
