"""Exceptions the service tells apart from ordinary failures."""


class Cancelled(Exception):
    """A stop flag asked a long computation to end early; the caller asked for it, so it is not a failure."""


class Diverged(ArithmeticError):
    """Training produced a non-finite loss (learning rate too high, bad data); its model is useless."""
