"""The base of every error a job reports as one clear line (bad input, bad config)."""


class EmbedlibError(Exception):
    """An expected failure: the message says what is wrong and with which input."""
