"""Bearer JWT verification: every way a token can be wrong is a 401 `INVALID_TOKEN`, never anonymous."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.config import SettingsError, load_settings
from gateway.rest.errors import LoopBackError
from gateway.security.tokens import TokenSetupError, TokenVerifier
from tests.security.conftest import SECRET, GatewayFactory, bearer, make_token

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def unsigned(claims: dict[str, Any], header: dict[str, Any] | None = None) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part(header or {'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def hmac_signed_with(key: bytes) -> str:
    head = unsigned({"sub": "mallory", "exp": time.time() + 60}, {"alg": "HS256", "typ": "JWT"})[:-1]
    signature = hmac.new(key, head.encode(), hashlib.sha256).digest()
    return head + "." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode()


def failure(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(LoopBackError) as caught:
        verifier.verify(token)
    error = caught.value
    assert error.status == 401
    assert error.code == "INVALID_TOKEN"
    assert token not in error.message
    return error.message


HS = TokenVerifier.from_secret(SECRET)


def test_a_good_token_gives_its_principal() -> None:
    principal = HS.verify(make_token("alice", roles=["admin", "$owner", "editor"]))
    assert principal.id == "alice"
    assert principal.roles == {"admin", "editor"}  # a token cannot claim LoopBack's dynamic roles
    assert principal.expires_at > time.time()


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (lambda: unsigned({"sub": "alice", "exp": time.time() + 60}), "must be signed with HS256"),
        (lambda: make_token(algorithm="HS512"), "must be signed with HS256"),
        (lambda: make_token(key=RSA_KEY, algorithm="RS256"), "must be signed with HS256"),
        (lambda: make_token(key="another-secret-" + "0" * 64), "signature is invalid"),
        (lambda: make_token(ttl=-120), "has expired"),
        (lambda: make_token(nbf=time.time() + 120), "not valid yet"),
        (lambda: make_token(sub=None), 'no "sub" claim'),
        (lambda: make_token(roles="admin", sub=""), '"sub" claim must be a non-empty string'),
        (lambda: jwt.encode({"sub": "a"}, SECRET, algorithm="HS256"), 'no "exp" claim'),
        (lambda: "not-a-jwt", "malformed"),
        (lambda: "a.b.c", "malformed"),
        (lambda: "x" * 9000, "malformed"),
        (lambda: make_token(roles=[1, 2]), '"roles" claim must be a list of strings'),
        (lambda: make_token(exp=10**400), '"exp" claim must be a time before the year 10000'),
        (lambda: make_token(exp=1e308), '"exp" claim must be a time before the year 10000'),
    ],
    ids=[
        "alg-none",
        "wrong-hmac",
        "rs256-to-hs",
        "bad-signature",
        "expired",
        "not-yet-valid",
        "no-sub",
        "empty-sub",
        "no-exp",
        "garbage",
        "bad-segments",
        "oversized",
        "bad-roles",
        "exp-of-401-digits",
        "exp-of-1e308",
    ],
)
def test_bad_tokens_are_refused(token: Callable[[], str], message: str) -> None:
    assert message in failure(HS, token())


def test_clock_skew_is_tolerated_within_the_leeway() -> None:
    verifier = TokenVerifier.from_secret(SECRET, leeway=30)
    assert verifier.verify(make_token(ttl=-10)).id == "alice"
    assert verifier.verify(make_token(nbf=time.time() + 10)).id == "alice"
    assert "has expired" in failure(TokenVerifier.from_secret(SECRET, leeway=0), make_token(ttl=-2))


def test_issuer_and_audience_are_checked_when_configured() -> None:
    verifier = TokenVerifier.from_secret(SECRET, issuer="https://idp.example", audience="gateway")
    assert verifier.verify(make_token(iss="https://idp.example", aud="gateway")).id == "alice"
    assert "wrong issuer" in failure(verifier, make_token(iss="https://evil.example", aud="gateway"))
    assert "wrong audience" in failure(verifier, make_token(iss="https://idp.example", aud="other"))
    assert 'no "iss" claim' in failure(verifier, make_token(aud="gateway"))


def test_rs256_and_es256_public_keys(tmp_path: Path) -> None:
    (tmp_path / "rsa.pem").write_bytes(pem(RSA_KEY))
    (tmp_path / "ec.pem").write_bytes(pem(EC_KEY))
    rs = TokenVerifier.from_public_key(tmp_path / "rsa.pem")
    es = TokenVerifier.from_public_key(tmp_path / "ec.pem")
    assert (rs.algorithm, es.algorithm) == ("RS256", "ES256")
    assert rs.verify(make_token(key=RSA_KEY, algorithm="RS256")).id == "alice"
    assert es.verify(make_token(key=EC_KEY, algorithm="ES256")).id == "alice"
    # Algorithm confusion: an HS256 token whose HMAC key is the public key's PEM is refused.
    assert "must be signed with RS256" in failure(rs, hmac_signed_with(pem(RSA_KEY)))
    assert "must be signed with ES256" in failure(es, make_token(key=RSA_KEY, algorithm="RS256"))
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert "signature is invalid" in failure(rs, make_token(key=other, algorithm="RS256"))


def test_unusable_keys_fail_at_start_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(TokenSetupError, match="GATEWAY_AUTH_JWT_PUBLIC_KEY: cannot read"):
        TokenVerifier.from_public_key(tmp_path / "missing.pem")
    (tmp_path / "junk.pem").write_text("junk")
    with pytest.raises(TokenSetupError, match="not a PEM public key"):
        TokenVerifier.from_public_key(tmp_path / "junk.pem")
    with pytest.raises(SettingsError, match=r"GATEWAY_AUTH_JWT_SECRET: .*at least 32 bytes"):
        load_settings(auth_jwt_secret="short")
    with pytest.raises(SettingsError, match="not both"):
        load_settings(auth_jwt_secret=SECRET, auth_jwt_public_key=tmp_path / "rsa.pem")


@pytest.mark.parametrize(
    "authorization",
    [
        lambda: f"Bearer {unsigned({'sub': 'alice', 'exp': time.time() + 60})}",
        lambda: f"Bearer {make_token(ttl=-120)}",
        lambda: f"Bearer {make_token(nbf=time.time() + 120)}",
        lambda: f"Bearer {make_token(key='x' * 64)}",
        lambda: f"Basic {base64.b64encode(b'alice:pw').decode()}",
        lambda: "Bearer",
        lambda: f"Token {make_token()}",
    ],
    ids=["alg-none", "expired", "nbf", "bad-signature", "basic", "empty", "other-scheme"],
)
async def test_bad_credentials_are_a_401_in_the_loopback_envelope_even_on_public_routes(
    secured: GatewayFactory, authorization: Callable[[], str]
) -> None:
    async with secured() as (client, _):
        for path in ("/api/Boards", "/api/Notes"):  # Boards are public to anonymous readers
            reply = await client.get(path, headers={"Authorization": authorization()})
            assert reply.status_code == 401
            error = reply.json()["error"]
            assert error["name"] == "Error"
            assert error["code"] == "INVALID_TOKEN"
            assert error["statusCode"] == 401
            assert reply.headers["www-authenticate"].startswith("Bearer")
        assert (await client.get("/api/Boards")).status_code == 200
        assert (await client.get("/api/Boards", headers=bearer(make_token()))).status_code == 200


@pytest.mark.parametrize("exp", [10**400, 1e308, 253402300800])
async def test_a_signed_token_that_never_expires_is_a_401_not_a_500(
    secured: GatewayFactory, exp: float
) -> None:
    token = make_token(exp=exp)
    async with secured() as (client, _):
        for method, path in (("GET", "/api/Notes"), ("POST", "/auth/session")):
            reply = await client.request(method, path, headers=bearer(token))
            assert reply.status_code == 401, (method, path, reply.text)
            assert reply.json()["error"]["code"] == "INVALID_TOKEN"
