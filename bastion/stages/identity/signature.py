"""JWS signature checks on prepared keys: ECDSA (ES256/384/512) straight on `cryptography` key objects.

joserfc's `validate_compact` looks the algorithm up, re-checks the key's type, use and operations, and converts
the key on every call. For a token that is not in the verified-token cache, that is a fixed cost on top of the
signature itself. Here each JWKS key is prepared once (its `cryptography` public key and the ECDSA hash object),
and the header registry check runs once per token. Every check joserfc makes is still made, once:

- the algorithm is the provider's (`ProviderVerifier` refuses any other before a key is looked up) and the key
  fits it, type, curve, `alg` and `use` (`jwks.key_fits`, RFC 8725 §3.1);
- `key_ops`, when the key has them, include `verify` (RFC 7517 §4.3);
- the header's registered parameters have their registered types (joserfc's header registry);
- the signature is base64url and exactly two integers of the curve's size (RFC 7518 §3.4).

Any other algorithm family (RSA, EdDSA, HMAC) goes through joserfc unchanged.
"""

from __future__ import annotations

from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jws import JWSRegistry

from bastion.cache import BoundedCache
from bastion.stages.identity.compact import Compact, b64decode

# RFC 7518 §3.4: the hash and the byte length of each of R and S
_ECDSA: dict[str, tuple[type[hashes.HashAlgorithm], int]] = {
    "ES256": (hashes.SHA256, 32), "ES384": (hashes.SHA384, 48), "ES512": (hashes.SHA512, 66),
}
_MAX_KEYS = 1024  # prepared keys kept (a JWKS holds a handful; rotations replace them)
# registered header parameters whose registered type is a string (RFC 7515 §4.1): a header of only these, each
# a string, passes joserfc's registry check without running it (alg is required, and present: compact.py)
_STRING_HEADERS = frozenset({"alg", "kid", "typ"})


class _Prepared:
    """One key made ready for one algorithm."""

    __slots__ = ("ecdsa", "key", "length", "public")

    def __init__(self, key: Any, public: ec.EllipticCurvePublicKey, alg: str) -> None:
        digest, self.length = _ECDSA[alg]
        self.key = key  # held so that the cache's id() key cannot be reused by another object while cached
        self.public = public
        self.ecdsa = ec.ECDSA(digest())


class SignatureCheck:
    """`ok(obj, key, alg)`: whether the compact JWS `obj` is signed by `key` with `alg` (pinned by the caller)."""

    def __init__(self, registry: JWSRegistry) -> None:
        self.registry = registry
        self._prepared: BoundedCache[tuple[int, str], _Prepared | None] = BoundedCache(_MAX_KEYS)

    def header_ok(self, header: dict[str, Any]) -> bool:
        """The registered header parameters have their registered types (checked once per token)."""
        if header.keys() <= _STRING_HEADERS and all(isinstance(value, str) for value in header.values()):
            return "alg" in header  # the registry's one required parameter
        try:
            self.registry.check_header(header)
        except JoseError:
            return False
        return True

    def ok(self, obj: jws.CompactSignature, key: Any, alg: str) -> bool:
        """The same check on a joserfc `CompactSignature` (`extract_compact`'s result)."""
        segments = obj.segments
        return self._check(obj, segments["header"] + b"." + segments["payload"], segments["signature"].decode(),
                           key, alg)

    def verify(self, token: Compact, key: Any, alg: str) -> bool:
        """Whether the compact JWS `token` (taken apart by `compact.Compact`) is signed by `key` with `alg`."""
        return self._check(token, token.signing_input, token.signature, key, alg)

    def _check(self, token: jws.CompactSignature | Compact, signing_input: bytes, signature: str, key: Any,
               alg: str) -> bool:
        prepared = self._prepare(key, alg)
        if prepared is None:  # not an ECDSA key: joserfc checks it the whole way
            obj = token if isinstance(token, jws.CompactSignature) else _joserfc(token)
            try:
                return jws.validate_compact(obj, key, registry=self.registry)
            except JoseError:
                return False
        try:
            sig = token.signature_bytes() if isinstance(token, Compact) else b64decode(signature)
        except ValueError:
            return False
        length = prepared.length
        if len(sig) != 2 * length:  # RFC 7518 §3.4: R and S, each exactly the curve's size
            return False
        der = encode_dss_signature(int.from_bytes(sig[:length], "big"), int.from_bytes(sig[length:], "big"))
        try:
            prepared.public.verify(der, signing_input, prepared.ecdsa)
        except InvalidSignature:
            return False
        return True

    def _prepare(self, key: Any, alg: str) -> _Prepared | None:
        cache_key = (id(key), alg)
        prepared = self._prepared.get(cache_key, 0.0)
        if prepared is not None and prepared.key is key:
            return prepared
        made: _Prepared | None = None
        ops = key.get("key_ops")
        public = getattr(key, "public_key", None)
        if alg in _ECDSA and key.key_type == "EC" and (ops is None or "verify" in ops) \
                and isinstance(public, ec.EllipticCurvePublicKey) \
                and (public.curve.key_size + 7) // 8 == _ECDSA[alg][1]:  # the curve the algorithm names
            made = _Prepared(key, public, alg)
        if made is not None:
            self._prepared.put(cache_key, made, 0.0)
        return made


def _joserfc(token: Compact) -> jws.CompactSignature:
    """joserfc's model of a token taken apart by `Compact` (for the algorithm families joserfc verifies)."""
    head, body, signature = token.segments
    obj = jws.CompactSignature(token.header, token.payload)
    obj.segments.update({"header": head.encode("ascii"), "payload": body.encode("ascii"),
                         "signature": signature.encode("ascii")})
    return obj
