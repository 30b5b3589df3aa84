"""JWT material for the identity and authz scenarios: one ES256 key, its JWKS file, and signed access tokens.

Everything is written into the run's temp dir; the key is made once per run (the second call reads it back),
so every scenario and every Bastion process of a run trusts the same JWKS.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

KID = "bench-es256"


def _key(tmp: Path) -> Any:
    from joserfc.jwk import ECKey

    path = tmp / "jwt-private.json"
    if path.exists():
        return ECKey.import_key(json.loads(path.read_text()))
    key = ECKey.generate_key("P-256", parameters={"kid": KID, "use": "sig", "alg": "ES256"})
    path.write_text(json.dumps(key.as_dict(private=True)))
    (tmp / "jwks.json").write_text(json.dumps({"keys": [key.as_dict(private=False)]}))
    return key


def jwks_file(tmp: Path) -> Path:
    """The public JWKS of the run's key (made on first use)."""
    _key(tmp)
    return tmp / "jwks.json"


def mint(tmp: Path, issuer: str, audience: str, count: int = 1, **claims: Any) -> list[str]:
    """`count` ES256 access tokens (typ at+jwt), each with its own `jti`, valid for 6 hours."""
    from joserfc import jwt

    key = _key(tmp)
    now = int(time.time())
    header = {"alg": "ES256", "typ": "at+jwt", "kid": KID}
    base = {"iss": issuer, "aud": audience, "sub": "acct-42", "iat": now, "exp": now + 6 * 3600,
            "client_id": "bench", "scope": "bench:read bench:write", "roles": ["clerk"], **claims}
    if count <= 16:
        return [jwt.encode(header, {**base, "jti": f"bench-{i}"}, key) for i in range(count)]
    return _sign_many(key, header, base, count)


def _sign_many(key: Any, header: dict[str, Any], base: dict[str, Any], count: int) -> list[str]:
    """The same tokens as joserfc's `jwt.encode` makes (checked by a test), signed straight with `cryptography`:
    the uncached scenarios need ~10^5 of them and joserfc's general model costs several times the signature."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    private = key.private_key
    head = _b64(json.dumps(header, separators=(",", ":")).encode())
    minted = []
    for i in range(count):
        claims = _b64(json.dumps({**base, "jti": f"bench-{i}"}, separators=(",", ":")).encode())
        signing_input = f"{head}.{claims}".encode()
        r, s = decode_dss_signature(private.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        minted.append(f"{head}.{claims}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}")
    return minted


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


LUA_CYCLE = """\
-- wrk script (generated): every request carries the next of {count} distinct bearer tokens, read from
-- {path}. Each wrk run starts {stride} tokens after the previous run's start (a counter in {counter}), so no
-- run replays the tokens its predecessors sent: a replayed token is a cache hit, and a hit moves the token into
-- the protected part of a segmented cache, where it keeps hitting (the 16:33 run of 2026-12-07 had ~20 % hits)
local tokens = {{}}
for line in io.lines("{path}") do tokens[#tokens + 1] = "Bearer " .. line end
local i = 0
function init(args)
  local f = io.open("{counter}", "r")
  local runs = f and tonumber(f:read("*l")) or 0
  if f then f:close() end
  f = io.open("{counter}", "w")
  f:write(tostring(runs + 1))
  f:close()
  i = (runs * {stride}) % #tokens
end
request = function()
  i = i % #tokens + 1
  wrk.headers["Authorization"] = tokens[i]
  return wrk.format()
end
"""

# Tokens one wrk run may send (a 5 s round at up to 8,000 req/s) and how many are minted: four runs' worth, so a
# token comes back only after three whole runs, each more than the 10,000 entries a verified-token cache holds.
RUN_STRIDE = 40_000


def cycling_script(tmp: Path, tokens: list[str], name: str = "tokens") -> Path:
    """A wrk Lua script that sends the tokens in turn, one per request."""
    path = tmp / f"{name}.txt"
    path.write_text("\n".join(tokens) + "\n")
    script = tmp / f"{name}.lua"
    script.write_text(LUA_CYCLE.format(count=len(tokens), path=path, stride=RUN_STRIDE,
                                       counter=tmp / f"{name}.runs"))
    return script
