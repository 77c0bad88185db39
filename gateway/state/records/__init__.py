"""Usage counters per name and day, ordered indexes and capped lists: what the console reads."""
