"""The benchmark harness: its generated configs are valid, and its parsers read what the tools print."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bastion.compile import compile_config  # noqa: E402
from bastion.config.loader import load_config  # noqa: E402
from bench import nginx, report, run, scenarios, wrk  # noqa: E402
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


def test_generated_bastion_config_validates(tmp_path: Path) -> None:
    path = tmp_path / "bastion.yaml"
    path.write_text(scenarios.dump(scenarios.bastion_config(scenarios.SCENARIOS)))
    loaded = load_config(path)
    api = loaded.model.apis[0]
    assert [(r.path, r.methods) for r in api.routes][:2] == [("/get", ["GET"]), ("/post", ["POST"])]
    assert loaded.model.gateway.listeners[0].port == scenarios.LISTEN_PORT
    assert loaded.model.gateway.admin.port == scenarios.ADMIN_PORT
    compiled = compile_config(loaded)  # the checks `bastion validate` runs: baselines, routes, stages
    assert len(compiled.routes) == len(scenarios.SCENARIOS)
    plain = {r.info.route: r.plans[0] for r in compiled.routes if r.info.route in ("get", "post-1k")}
    for plan in plain.values():  # the plain proxy path: nothing buffers or inspects the request
        assert not plan.body_stages
        assert all(stage.control not in ("input", "traffic", "authz") for stage in plan.stages)


def test_scenario_fragments_merge_into_the_config() -> None:
    extra = scenarios.Scenario(
        name="strict", section="x", path="/strict",
        route={"policy": {"identity": {"required": True}}},
        fragment={"classes": {"partner": {"identity": {"required": True}}}},
    )
    config = scenarios.bastion_config((*scenarios.SCENARIOS, extra))
    assert set(config["classes"]) == {"open", "partner"}
    assert config["apis"][0]["routes"][-1]["policy"] == {"identity": {"required": True}}
    assert scenarios.BASE_CONFIG["classes"] == {"open": scenarios.OPEN_CLASS}  # not mutated
    assert set(scenarios.OPEN_CLASS) == {"identity", "input"}


def test_two_scenarios_on_one_route_are_refused() -> None:
    twin = scenarios.Scenario(name="twin", section="core", path="/get")
    with pytest.raises(ValueError, match="both use GET /get"):
        scenarios.bastion_config((*scenarios.SCENARIOS, twin))


def test_only_selects_by_name_section_or_glob() -> None:
    assert [s.name for s in scenarios.select(["post*"])] == ["post-1k", "post-1k-inspected"]
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
    assert lines[2].startswith("| nginx | 25,000 | 1.00 | ") and "| 5.0ms |" in lines[2]
    assert "failed" in lines[3]


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
