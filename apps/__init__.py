"""tunesmith apps: commands built on the core (serve, export, compare, tune), each a plugin.

Shared by the apps only (the core has no use for it): :func:`echo`.
"""

import sys


def echo(quiet: bool):
    """Progress lines of compare / tune: stderr, none with --quiet."""
    return (lambda msg: None) if quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
