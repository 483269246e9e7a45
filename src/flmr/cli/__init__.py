"""The ``flmr`` command line."""
