"""JWT material for the identity and authz scenarios: one ES256 key, its JWKS file, and signed access tokens.

Everything is written into the run's temp dir; the key is made once per run (the second call reads it back),
so every scenario and every Bastion process of a run trusts the same JWKS.
"""

from __future__ import annotations

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
    return [jwt.encode(header, {**base, "jti": f"bench-{i}"}, key) for i in range(count)]


LUA_CYCLE = """\
-- wrk script (generated): every request carries the next of {count} distinct bearer tokens, read from
-- {path}, so a token comes back only after {count} requests: more than the verified-token cache holds.
local tokens = {{}}
for line in io.lines("{path}") do tokens[#tokens + 1] = "Bearer " .. line end
local i = 0
request = function()
  i = i % #tokens + 1
  wrk.headers["Authorization"] = tokens[i]
  return wrk.format()
end
"""


def cycling_script(tmp: Path, tokens: list[str], name: str = "tokens") -> Path:
    """A wrk Lua script that sends the tokens in turn, one per request."""
    path = tmp / f"{name}.txt"
    path.write_text("\n".join(tokens) + "\n")
    script = tmp / f"{name}.lua"
    script.write_text(LUA_CYCLE.format(count=len(tokens), path=path))
    return script
