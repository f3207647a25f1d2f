"""tunesmith apps: commands built on the core (serve, export, compare, tune), each a plugin."""
