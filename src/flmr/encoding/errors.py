"""Errors of the encoding stage."""


class CollectionError(ValueError):
    """A collection, one of its documents, or an encoding run's files cannot be used; the message names which."""
