"""What listens to the storage layer's events: today the webhook sender (`webhooks`).

The storage layer says what it did (storage/events.py) and knows nothing of
who listens; this package sits above it and below the HTTP layer, which only
wires a listener in (app.py) and holds a request's events until its response
is written (`webhooks.after_response`).
"""
