"""Identity providers for the tests, each a real HTTP server on loopback.

- `KeyServer`: an issuer of our own: a discovery document and a JWKS over HTTP,
  its keys rotatable, its fetches counted; it mints tokens, good and bad.
- `oidc_provider()`: oidc-provider-mock (a real OpenID Connect provider, the
  authorization code flow with a consent form), behind a front that makes it
  behave as a provider configured for a browser client does: PKCE (S256)
  enforced for public clients, and CORS on its token endpoint.
- `CallbackServer`: an operator's auth callback, answering as each test says.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import http.server
import io
import itertools
import json
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

AUDIENCE = "file-uploader-tests"
# RSA keys a process makes and then hands out in turn (`rsa_key`). Making one takes 50 to 100 ms
# of CPU, and the tests asked for one with every issuer and rotation (a second of the edit loop);
# no test takes more than four, so any key it gets differs from every other it gets.
RSA_KEYS_KEPT = 8
_rsa_keys: list[rsa.RSAPrivateKey] = []
_rsa_turn = itertools.count()


def rsa_key() -> rsa.RSAPrivateKey:
    """A 2048-bit RSA key, different from the RSA_KEYS_KEPT - 1 handed out before it."""
    turn = next(_rsa_turn) % RSA_KEYS_KEPT
    if turn == len(_rsa_keys):
        _rsa_keys.append(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    return _rsa_keys[turn]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    """A JWT put together by hand: for the tokens no honest library would sign."""
    head = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
    return head + "." + b64url(signature)


@contextlib.contextmanager
def serving(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[http.server.ThreadingHTTPServer]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    # poll_interval: shutdown() waits up to one poll, half a second by default, at every test's end.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


class _Quiet(http.server.BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def send_json(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class KeyServer:
    """An issuer at http://127.0.0.1:<port>: discovery, JWKS (RSA and EC keys), and tokens."""

    def __init__(self) -> None:
        self.keys: list[tuple[str, Any]] = []  # (kid, private key), published in this order
        self.fetches = 0
        self.issuer = ""
        self.add_key()
        self.add_key(ec.generate_private_key(ec.SECP256R1()))

    def add_key(self, private: Any = None) -> str:
        kid = uuid.uuid4().hex[:12]
        self.keys.append((kid, private or rsa_key()))
        return kid

    def rotate(self) -> str:
        """A new RSA key replaces the first: tokens signed with the old one stop verifying."""
        del self.keys[0]
        kid = uuid.uuid4().hex[:12]
        self.keys.insert(0, (kid, rsa_key()))
        return kid

    def jwks(self) -> dict[str, Any]:
        published = []
        for kid, private in self.keys:
            algorithm = RSAAlgorithm if isinstance(private, rsa.RSAPrivateKey) else ECAlgorithm
            jwk = algorithm.to_jwk(private.public_key(), as_dict=True)
            published.append({**jwk, "kid": kid, "use": "sig"})
        return {"keys": published}

    def public_pem(self) -> bytes:
        return (
            self.keys[0][1]
            .public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": "alice", "aud": AUDIENCE, "iat": now, "exp": now + 300}
        claims.update(overrides)
        return {name: value for name, value in claims.items() if value is not None}

    def mint(self, *, key: int = 0, alg: str | None = None, kid: str | None = None, **claims: Any) -> str:
        """A token signed with key number `key` (0: RSA, 1: EC), its claims `claims()` with overrides."""
        key_id, private = self.keys[key]
        alg = alg or ("RS256" if isinstance(private, rsa.RSAPrivateKey) else "ES256")
        return jwt.encode(self.claims(**claims), private, algorithm=alg, headers={"kid": kid or key_id})

    @contextlib.contextmanager
    def running(self) -> Iterator[KeyServer]:
        owner = self

        class Handler(_Quiet):
            def do_GET(self) -> None:
                if self.path.endswith("/.well-known/openid-configuration"):
                    self.send_json(200, {"issuer": owner.issuer, "jwks_uri": owner.issuer + "/jwks"})
                elif self.path == "/jwks":
                    owner.fetches += 1
                    self.send_json(200, owner.jwks())
                else:
                    self.send_json(404, {})

        with serving(Handler) as server:
            self.issuer = f"http://127.0.0.1:{server.server_port}"
            yield self


class CallbackServer:
    """The operator's auth callback: `answers[token] = (status, body)`; unknown tokens get 401;
    `delay` seconds before every answer. Every request is kept: (body, signature header)."""

    def __init__(self, secret: bytes) -> None:
        self.secret = secret
        self.answers: dict[str, tuple[int, Any]] = {}
        self.delay = 0.0
        self.requests: list[tuple[bytes, str]] = []
        self.url = ""

    def valid_signature(self, body: bytes, header: str) -> bool:
        """What a receiver does with X-Hook-Signature (docs/operators.md)."""
        expected = "sha256=" + hmac.new(self.secret, body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, header)

    @contextlib.contextmanager
    def running(self) -> Iterator[CallbackServer]:
        owner = self

        class Handler(_Quiet):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                owner.requests.append((body, self.headers.get("X-Hook-Signature", "")))
                time.sleep(owner.delay)
                token = json.loads(body).get("token")
                status, answer = owner.answers.get(token, (401, {"error": "unknown"}))
                self.send_json(status, answer)

        with serving(Handler) as server:
            self.url = f"http://127.0.0.1:{server.server_port}/auth"
            yield self


class _PublicClientFront:
    """WSGI middleware in front of oidc-provider-mock: what a provider does for a browser
    (public) client. oidc-provider-mock 0.3 neither checks PKCE nor takes clients without a
    secret; this front checks the S256 code_verifier against the code_challenge the
    authorization request carried (refusing the token request as a provider must, RFC 7636
    §4.6), then hands the mock the placeholder secret it accepts from any client; and it
    answers CORS on the token endpoint, as a provider configured with the page's origin does."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.challenges: dict[str, str | None] = {}  # authorization code -> its code_challenge
        self.token_requests: list[dict[str, str]] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        if path == "/oauth2/authorize":
            query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
            challenge = query.get("code_challenge", [None])[0]

            def remember(status: str, headers: list[tuple[str, str]], *rest: Any) -> Any:
                for name, value in headers:
                    if name.lower() == "location":
                        code = urllib.parse.parse_qs(urllib.parse.urlsplit(value).query).get("code")
                        if code:
                            self.challenges[code[0]] = challenge
                return start_response(status, headers, *rest)

            return self.app(environ, remember)
        if path != "/oauth2/token":
            return self.app(environ, start_response)
        cors = [
            ("Access-Control-Allow-Origin", environ.get("HTTP_ORIGIN", "*")),
            ("Access-Control-Allow-Headers", "Content-Type"),
            ("Access-Control-Allow-Methods", "POST"),
        ]
        if environ["REQUEST_METHOD"] == "OPTIONS":
            start_response("204 No Content", cors)
            return [b""]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        form = dict(urllib.parse.parse_qsl(environ["wsgi.input"].read(length).decode()))
        self.token_requests.append(dict(form))  # as the client sent it
        if form.get("grant_type") == "authorization_code":
            challenge = self.challenges.pop(form.get("code", ""), None)
            verifier = form.get("code_verifier", "")
            computed = b64url(hashlib.sha256(verifier.encode()).digest())
            if challenge is None or not hmac.compare_digest(computed, challenge):
                body = json.dumps({"error": "invalid_grant", "error_description": "PKCE verification failed"})
                start_response("400 Bad Request", [("Content-Type", "application/json"), *cors])
                return [body.encode()]
            form.setdefault("client_secret", "public-client")
        data = urllib.parse.urlencode(form).encode()
        environ["wsgi.input"] = io.BytesIO(data)
        environ["CONTENT_LENGTH"] = str(len(data))

        def with_cors(status: str, headers: list[tuple[str, str]], *rest: Any) -> Any:
            return start_response(status, [*headers, *cors], *rest)

        return self.app(environ, with_cors)


@contextlib.contextmanager
def oidc_provider(**options: Any) -> Iterator[tuple[str, _PublicClientFront]]:
    """oidc-provider-mock on localhost (its issuer is the URL it is reached by); yields the issuer
    and the front, which records the token requests."""
    import oidc_provider_mock
    import werkzeug.serving

    app = oidc_provider_mock.app(**options)
    front = _PublicClientFront(app.wsgi_app)
    app.wsgi_app = front  # type: ignore[method-assign]
    server = werkzeug.serving.make_server("localhost", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{server.server_port}", front
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def sign_in(issuer: str, subject: str, client_id: str = AUDIENCE, **claims: Any) -> str:
    """An ID token of `subject` from oidc-provider-mock, through its authorization code flow with
    PKCE (as the page does, without the browser); `claims` are set on the user first."""
    import httpx

    redirect = "http://127.0.0.1:9/"
    verifier = b64url(uuid.uuid4().bytes + uuid.uuid4().bytes)
    with httpx.Client(base_url=issuer, timeout=10) as http:
        if claims:
            assert http.put(f"/users/{subject}", json=claims).status_code == 204
        params = {
            "client_id": client_id,
            "redirect_uri": redirect,
            "response_type": "code",
            "scope": "openid profile email",
            "state": "state",
            "code_challenge": b64url(hashlib.sha256(verifier.encode()).digest()),
            "code_challenge_method": "S256",
        }
        answer = http.post("/oauth2/authorize", params=params, data={"sub": subject})
        code = urllib.parse.parse_qs(urllib.parse.urlsplit(answer.headers["location"]).query)["code"][0]
        tokens = http.post(
            "/oauth2/token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect,
                "client_id": client_id,
                "code_verifier": verifier,
            },
        )
        assert tokens.status_code == 200, tokens.text
        return tokens.json()["id_token"]
