"""What can go wrong when a request says who it is: two answers, and nothing in between.

`InvalidToken` is the client's problem (401): the credential is malformed,
expired, signed by no key we trust, or unknown to the auth callback.
`AuthUnavailable` is ours (503): the provider's keys or the auth callback could
not be had, so the gateway cannot tell, and refuses rather than guess (fail
closed). The HTTP layer maps both, in its one table of errors.
"""

from __future__ import annotations


class InvalidToken(Exception):
    """The credential does not identify a user; the message says why, for the client."""


class AuthUnavailable(Exception):
    """The gateway could not ask whoever decides (the provider's keys, the auth callback)."""
