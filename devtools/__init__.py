"""Tools for developing and testing the gateway: local S3 servers, free ports.

Not shipped with the package."""
