"""Bearer JWT verification: one algorithm, fixed by the configured key, never taken from the token.

HS256 with `GATEWAY_AUTH_JWT_SECRET`, or the algorithm that fits `GATEWAY_AUTH_JWT_PUBLIC_KEY` (an RSA key:
RS256; an EC key: ES256/ES384/ES512 by curve). Accepting exactly one algorithm closes the classic holes:
`alg: none`, and an HS256 token "signed" with the public key (algorithm confusion). `exp` and `sub` are
required; `iss` and `aud` are checked when configured; `nbf`/`exp` allow `GATEWAY_AUTH_JWT_LEEWAY` seconds of
clock skew. Messages name what is wrong and never contain the token.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from gateway.security.principal import Principal, Via, invalid_token

MAX_TOKEN_BYTES = 8192
"""Longer credentials are refused before any parsing (a cheap guard against oversized input)."""
_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


class TokenSetupError(ValueError):
    """The configured key cannot be used; the message names the setting."""


class TokenVerifier:
    """Turns a bearer token into a `Principal`, or raises a 401 `INVALID_TOKEN` LoopBackError."""

    def __init__(
        self,
        *,
        key: Any,
        algorithm: str,
        issuer: str | None = None,
        audience: str | None = None,
        leeway: float = 30.0,
        roles_claim: str = "roles",
    ) -> None:
        self.algorithm = algorithm
        self._key = key
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway
        self._roles_claim = roles_claim

    @classmethod
    def from_secret(cls, secret: str, **options: Any) -> TokenVerifier:
        return cls(key=secret, algorithm="HS256", **options)

    @classmethod
    def from_public_key(cls, path: Path, **options: Any) -> TokenVerifier:
        setting = "GATEWAY_AUTH_JWT_PUBLIC_KEY"
        try:
            key = load_pem_public_key(path.read_bytes())
        except OSError as exc:
            raise TokenSetupError(f"{setting}: cannot read {path}: {exc.strerror}") from None
        except ValueError as exc:
            raise TokenSetupError(f"{setting}: {path} is not a PEM public key: {exc}") from None
        if isinstance(key, rsa.RSAPublicKey):
            if key.key_size < 2048:
                raise TokenSetupError(f"{setting}: an RSA key must have at least 2048 bits")
            return cls(key=key, algorithm="RS256", **options)
        if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in _EC_ALGORITHMS:
            return cls(key=key, algorithm=_EC_ALGORITHMS[key.curve.name], **options)
        raise TokenSetupError(f"{setting}: use an RSA (RS256) or EC P-256/384/521 (ES256/384/512) public key")

    def verify(self, token: str, via: Via = "bearer") -> Principal:
        if not token or len(token) > MAX_TOKEN_BYTES or not token.isascii():
            raise invalid_token("The access token is malformed")
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[self.algorithm],
                issuer=self._issuer,
                audience=self._audience,
                leeway=self._leeway,
                options={"require": ["exp", "sub"], "verify_aud": self._audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise invalid_token("The access token has expired") from None
        except jwt.ImmatureSignatureError:
            raise invalid_token("The access token is not valid yet") from None
        except jwt.InvalidAlgorithmError:
            raise invalid_token(f"The access token must be signed with {self.algorithm}") from None
        except jwt.InvalidSignatureError:
            raise invalid_token("The access token signature is invalid") from None
        except jwt.InvalidIssuerError:
            raise invalid_token("The access token has the wrong issuer") from None
        except jwt.InvalidAudienceError:
            raise invalid_token("The access token has the wrong audience") from None
        except jwt.MissingRequiredClaimError as exc:
            raise invalid_token(f'The access token has no "{exc.claim}" claim') from None
        except jwt.InvalidTokenError:
            raise invalid_token("The access token is malformed") from None
        except (TypeError, ValueError):  # oddly typed claims PyJWT does not anticipate
            raise invalid_token("The access token is malformed") from None
        return Principal(id=_subject(claims), roles=self._roles(claims), expires_at=_expiry(claims), via=via)

    def _roles(self, claims: dict[str, Any]) -> frozenset[str]:
        raw = claims.get(self._roles_claim)
        if raw is None:
            return frozenset()
        if isinstance(raw, str):
            raw = [raw]
        if not isinstance(raw, list) or not all(isinstance(role, str) for role in raw):
            raise invalid_token(f'The access token\'s "{self._roles_claim}" claim must be a list of strings')
        # `$`-names are LoopBack's dynamic roles: the gateway decides those, a token cannot claim them.
        return frozenset(role for role in raw if role and not role.startswith("$"))


def _subject(claims: dict[str, Any]) -> str:
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub or len(sub) > 256:
        raise invalid_token('The access token\'s "sub" claim must be a non-empty string')
    return sub


MAX_EXPIRY = 253402300799
"""The last second of the year 9999: no later `exp` can be a cookie's expiry or a float's exact time."""


def _expiry(claims: dict[str, Any]) -> float:
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, (int, float)):
        raise invalid_token('The access token\'s "exp" claim must be a number')
    if not exp <= MAX_EXPIRY:  # also NaN; 10**400 cannot even become a float
        raise invalid_token('The access token\'s "exp" claim must be a time before the year 10000')
    return float(exp)
