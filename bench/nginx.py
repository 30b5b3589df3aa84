"""nginx configurations for the benchmark: the upstream (small JSON answers) and the reference reverse proxy.

Both run one worker in the foreground with every path under the run's temp dir, so nothing touches /etc/nginx
or /var/lib/nginx. The upstream answers any path, so later scenarios can add routes without touching it.
"""

from __future__ import annotations

from pathlib import Path

GET_BODY = '{"ok":true,"service":"bench","items":[1,2,3]}'
POST_BODY = '{"ok":true,"service":"bench","created":true}'

_COMMON = """\
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; multi_accept on; }}
"""

_HTTP_COMMON = """\
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
{keepalive_requests}    keepalive_timeout 75s;
    client_max_body_size 1m;
    client_body_buffer_size 16k;
"""


# nginx closes a keep-alive connection after 1000 requests by default (client side and upstream pool). With
# 64 connections at tens of thousands of req/s, that is a reconnect every few milliseconds: the upstream and
# the reference proxy lift the cap, as Bastion has none; `nginx-defaults` keeps it, for comparison.
UNCAPPED = 1_000_000


def _keepalive(requests: int | None) -> str:
    return f"    keepalive_requests {requests};\n" if requests else ""


def upstream_conf(directory: Path, port: int) -> str:
    """GET (any path) -> a small JSON; POST (any path) -> a small JSON after reading the body.

    For `return`, nginx reads the request body and discards it (ngx_http_discard_request_body), so a POST
    body is consumed from the socket and the keep-alive connection stays usable.
    """
    return (
        _COMMON.format(dir=directory)
        + "http {\n"
        + _HTTP_COMMON.format(dir=directory, keepalive_requests=_keepalive(UNCAPPED))
        + f"""\
    default_type application/json;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            if ($request_method = POST) {{
                return 200 '{POST_BODY}';
            }}
            return 200 '{GET_BODY}';
        }}
    }}
}}
"""
    )


def proxy_conf(directory: Path, port: int, upstream_port: int, keepalive_requests: int | None = UNCAPPED,
               h2c: bool = False) -> str:
    """nginx as a plain reverse proxy with a keep-alive upstream pool: the figure Bastion is compared with.

    `keepalive_requests=None` leaves nginx's default (1000 requests per connection, both sides). `h2c=True`
    serves cleartext HTTP/2 with prior knowledge (`listen ... http2` without ssl, nginx 1.22) to clients; the
    upstream side stays HTTP/1.1 with keep-alive, as for Bastion.
    """
    pool = _keepalive(keepalive_requests).replace("    ", "        ", 1)
    return (
        _COMMON.format(dir=directory)
        + "http {\n"
        + _HTTP_COMMON.format(dir=directory, keepalive_requests=_keepalive(keepalive_requests))
        + f"""\
    upstream backend {{
        server 127.0.0.1:{upstream_port};
        keepalive 64;
{pool}    }}
    server {{
        listen 127.0.0.1:{port}{" http2" if h2c else ""} backlog=4096;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""
    )


def write(directory: Path, text: str) -> Path:
    """Write a config into its own directory (created) and return the file path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "nginx.conf"
    path.write_text(text)
    return path


def command(conf: Path) -> list[str]:
    """Start nginx in the foreground with the prefix set to the config's directory."""
    return ["nginx", "-p", str(conf.parent), "-e", str(conf.parent / "error.log"), "-c", str(conf)]


def test_command(conf: Path) -> list[str]:
    """`nginx -t` for a config: checks syntax and that every directive exists in this build."""
    return [*command(conf), "-t", "-q"]
