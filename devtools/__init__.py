"""Tools for developing and testing the gateway: not part of the package that runs in production."""
