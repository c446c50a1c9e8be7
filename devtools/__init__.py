"""Developer tools: real servers for the tests and the bench (not part of the gateway's package)."""
