# ruff: noqa
"""Session 22: a hang watchdog re-armed on every batch and cancelled at the end is the
faulthandler recipe; it stays quiet (the deadline armed once is in session22_shapes.py).
Never executed: scanned only."""
import faulthandler


def fit_with_watchdog(args, model, loader):
    for batch in loader:
        faulthandler.dump_traceback_later(args.hang_timeout, exit=True)  # ok: MLS307
        model(batch)
    faulthandler.cancel_dump_traceback_later()
