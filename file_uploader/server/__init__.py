"""The server's process: how the app is run, not what it does.

`lifecycle` (the graceful stop, the same under `python -m file_uploader` and
gunicorn), `worker` (gunicorn's worker class) and `connections` (how long a
client may take over a request head, how many connections one process holds).
This package sits above the app: it is handed the app, or the factory that
builds it, by its caller (`__main__.py`, or gunicorn naming
`file_uploader.app:create_app`), and never imports `app.py` itself.
"""
