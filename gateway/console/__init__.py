"""The web console: its static page, each team's gallery index and the recent errors list."""
