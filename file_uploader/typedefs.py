"""Typed keys for what the app and each request carry."""

from aiohttp import web

from .settings import Settings
from .storage import Storage

SETTINGS = web.AppKey("settings", Settings)
STORAGE = web.AppKey("storage", Storage)
# The one-way id of the request's user (never the token itself).
USER_ID = web.RequestKey("user_id", str)
# The HMAC key of share links: SHARE_SECRET, or random per process.
SHARE_KEY = web.AppKey("share_key", bytes)
