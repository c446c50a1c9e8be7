// Sign-in through the gateway's OpenID Connect issuer (AUTH_ISSUER), entirely in the browser:
// the authorization code flow with PKCE (RFC 7636, S256) for a public client, which keeps no
// secret. The gateway says where to sign in (GET /api/sign-in); without an issuer it says
// nothing, and the page stays as it is (a UUID token). app.js asks `SignIn.headers()` for the
// header every API request carries.
//
// What is kept where: while away at the provider, the PKCE verifier, the state and the nonce in
// sessionStorage (this tab only); once back, the ID token (the gateway verifies it on every
// request: iss, aud = the page's client id, exp, signature) in sessionStorage too, so closing
// the tab signs out of the page. The code is taken out of the address bar at once.
"use strict";

const SignIn = (() => {
  const SESSION_KEY = "file_uploader.session";
  const PENDING_KEY = "file_uploader.sign-in";
  let config = null;
  let uuidTokens = true;

  function b64url(bytes) {
    return btoa(String.fromCharCode(...new Uint8Array(bytes))).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function random() {
    return b64url(crypto.getRandomValues(new Uint8Array(32)));
  }

  function claimsOf(jwt) {
    const part = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const text = new TextDecoder().decode(Uint8Array.from(atob(part), (c) => c.charCodeAt(0)));
    return JSON.parse(text);
  }

  function redirectUri() {
    return location.origin + "/";
  }

  // The sign-in configuration, or null when the gateway has no issuer (or cannot reach it).
  async function load() {
    try {
      const response = await fetch("/api/sign-in");
      const answer = response.ok ? await response.json() : {};
      config = answer.sign_in || null;
      uuidTokens = answer.uuid_tokens !== false;
    } catch {
      config = null;
    }
    return config;
  }

  async function start() {
    const verifier = random();
    const pending = { state: random(), nonce: random(), verifier };
    sessionStorage.setItem(PENDING_KEY, JSON.stringify(pending));
    const challenge = b64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
    const url = new URL(config.authorization_endpoint);
    url.search = new URLSearchParams({
      response_type: "code",
      client_id: config.client_id,
      redirect_uri: redirectUri(),
      scope: config.scope,
      state: pending.state,
      nonce: pending.nonce,
      code_challenge: challenge,
      code_challenge_method: "S256",
    });
    location.assign(url.href);
  }

  // Back from the provider (?code=&state=, or ?error=): trade the code for the tokens.
  // Returns true when this load was such a return; throws with a reason a person can read.
  async function finish() {
    const params = new URLSearchParams(location.search);
    if (!params.has("code") && !params.has("error")) return false;
    history.replaceState(null, "", location.pathname);
    const pending = JSON.parse(sessionStorage.getItem(PENDING_KEY) || "null");
    sessionStorage.removeItem(PENDING_KEY);
    if (params.has("error")) throw new Error(`Sign-in was not completed: ${params.get("error_description") || params.get("error")}.`);
    if (!pending || params.get("state") !== pending.state) throw new Error("Sign-in answer does not match a sign-in from this tab. Try again.");
    let response;
    try {
      response = await fetch(config.token_endpoint, {
        method: "POST",
        headers: { "Content-Type": "application/x-www-form-urlencoded" },
        body: new URLSearchParams({
          grant_type: "authorization_code",
          code: params.get("code"),
          redirect_uri: redirectUri(),
          client_id: config.client_id,
          code_verifier: pending.verifier,
        }),
      });
    } catch {
      throw new Error("The sign-in service could not be reached. Try again.");
    }
    const tokens = await response.json().catch(() => ({}));
    if (!response.ok || !tokens.id_token) throw new Error(`The sign-in service refused: ${tokens.error_description || tokens.error || response.status}.`);
    const claims = claimsOf(tokens.id_token);
    if (claims.nonce !== pending.nonce) throw new Error("Sign-in answer was not meant for this sign-in (nonce). Try again.");
    sessionStorage.setItem(SESSION_KEY, JSON.stringify({ idToken: tokens.id_token, claims }));
    return true;
  }

  // The signed-in session, or null (never signed in, signed out, or its token expired).
  function current() {
    const session = JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null");
    if (!session || session.claims.exp * 1000 <= Date.now()) return null;
    return session;
  }

  function who(session) {
    const c = session.claims;
    return c.name || c.preferred_username || c.email || c.sub;
  }

  function signOut() {
    const session = current();
    sessionStorage.removeItem(SESSION_KEY);
    if (config && config.end_session_endpoint && session) {
      const url = new URL(config.end_session_endpoint);
      url.search = new URLSearchParams({
        id_token_hint: session.idToken,
        client_id: config.client_id,
        post_logout_redirect_uri: redirectUri(),
      });
      location.assign(url.href);
    } else {
      location.reload();
    }
  }

  // The credential header of an API request: the signed-in user's ID token, else none.
  function headers() {
    const session = current();
    return session ? { Authorization: `Bearer ${session.idToken}` } : {};
  }

  return { load, start, finish, current, who, signOut, headers, uuidTokens: () => uuidTokens };
})();
