"""Idempotency records: one claim per name, then the answer kept for its replays."""
