"""Every typed key the app and its requests carry, in one place."""

from aiohttp import web

from .hooks.blocking import BlockingHooks, Verdict
from .hooks.webhooks import Webhooks
from .identity import Identities, Identity
from .ops.inflight import RequestsInFlight
from .settings import Settings
from .storage import Storage
from .storage.probe import Capabilities

SETTINGS = web.AppKey("settings", Settings)
STORAGE = web.AppKey("storage", Storage)
# What an earlier write probe found this S3 to enforce, when create_app was handed it.
KNOWN_S3 = web.AppKey("known_s3", Capabilities)
# The HMAC key of share links: SHARE_SECRET, or random per process.
SHARE_KEY = web.AppKey("share_key", bytes)
IN_FLIGHT = web.AppKey("requests_in_flight", RequestsInFlight)
# The webhook sender, when WEBHOOK_URL is set.
WEBHOOKS = web.AppKey("webhooks", Webhooks)

# The blocking hooks (pre-create, pre-finish), when HOOK_URL is set.
BLOCKING_HOOKS = web.AppKey("blocking_hooks", BlockingHooks)

# Whose a bearer token is (identity/): JWTs, the auth callback.
IDENTITIES = web.AppKey("identities", Identities)

# The one-way id of the request's user (never the token itself).
USER_ID = web.RequestKey("user_id", str)
# The request's user, with their own quota when their credential carries one.
IDENTITY = web.RequestKey("identity", Identity)
# What the pre-create hook answered for this request's upload (asked once per PUT or tus creation).
HOOK_VERDICT = web.RequestKey("hook_verdict", Verdict)
# The request's id: the client's X-Request-ID if sane, else a new one.
REQUEST_ID = web.RequestKey("request_id", str)
# Set when a response was cut short by its client: "disconnected" or "send_timeout".
CUT_SHORT = web.RequestKey("cut_short", str)
