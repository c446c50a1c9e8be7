"""Headers every response carries, so that a browser treats the gateway's answers safely.

- `Server: file_uploader`, with no versions to look vulnerabilities up by.
- `X-Content-Type-Options: nosniff`: a file is what its Content-Type says, never
  a script or page a browser guessed from its bytes.
- `Referrer-Policy: no-referrer`: a share link in the address bar is a
  credential, and must not leave in a Referer header.
- The page (`/` and `/static/`): a strict Content-Security-Policy (its own
  script, style and API only; no inline code, no plugins, no `<base>`), and
  `frame-ancestors 'none'` with `X-Frame-Options: DENY` for older browsers, so
  no other site can frame it and trick a user into clicking on it.
- Everything else (JSON, files, share links): `default-src 'none'` and
  `sandbox`, so that even a file opened in a browser tab runs nothing.
"""

from __future__ import annotations

from aiohttp import hdrs, web

SERVER_NAME = "file_uploader"  # the Server header: no versions to look vulnerabilities up by

# The page's own script and style files and its API; images it fetches with the token
# header become blob: URLs; its plain-HTML fallback form posts to /api/files.
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
OTHER_POLICY = "default-src 'none'; frame-ancestors 'none'; sandbox"


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    headers = response.headers
    headers[hdrs.SERVER] = SERVER_NAME
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Referrer-Policy"] = "no-referrer"
    headers["X-Frame-Options"] = "DENY"
    if "Content-Security-Policy" not in headers:  # a handler's own page sets the page's
        page = request.path == "/" or request.path.startswith("/static/")
        headers["Content-Security-Policy"] = PAGE_POLICY if page else OTHER_POLICY
