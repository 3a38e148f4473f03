"""The page's endpoints of the running demo over real HTTP: the page's Content-Security-Policy
pins exactly its inline script and style, the page reflects nothing of the request, and the
history carries bounded series and the detector's trend."""

from __future__ import annotations

import base64
import hashlib
import http.client as httpclient
import json
import re
from typing import Dict, Tuple
from urllib.parse import urlsplit

from leakguard_e2e import Demo, http


def sha256(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode()


def test_the_policy_pins_the_page_s_inline_script_and_style(leaking_demo: Demo) -> None:
    status, headers, body = http("GET", f"{leaking_demo.base_url}/debug/leakguard/ui")
    assert status == 200
    page = body.decode("utf-8")
    csp = headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    for tag, directive in (("script", "script-src"), ("style", "style-src")):
        blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", page, re.S)
        assert len(blocks) == 1, f"one inline <{tag}>"
        expected = f"'{sha256(blocks[0])}'"
        assert directives[directive] == expected, (
            f"{directive} is {directives[directive]}, the page's <{tag}> hashes to {expected}: "
            f"update {tag.upper()}_SHA256 in leakguard/src/ui.rs"
        )
    assert directives["default-src"] == "'none'"
    assert directives["connect-src"] == "'self'"
    assert headers["x-content-type-options"] == "nosniff"


def raw_get(demo: Demo, target: str, headers: Dict[str, str]) -> Tuple[int, bytes]:
    """A GET sent as it is, with a request target and headers no client library would send."""
    address = urlsplit(demo.base_url)
    conn = httpclient.HTTPConnection(address.hostname or "127.0.0.1", address.port, timeout=10)
    try:
        conn.putrequest("GET", target, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_the_page_reflects_nothing_of_the_request(leaking_demo: Demo) -> None:
    _, _, plain = http("GET", f"{leaking_demo.base_url}/debug/leakguard/ui")
    hostile = {
        "Referer": "<script>alert(2)</script>",
        "Authorization": "Bearer </script><script>alert(3)</script>",
        "X-Forwarded-Host": "evil.example",
    }
    status, body = raw_get(
        leaking_demo, "/debug/leakguard/ui?q=%3Cscript%3Ealert(1)%3C/script%3E&x='-alert(1)-'", hostile
    )
    assert status == 200
    assert body == plain
    # Markup in the request target itself is refused before any route sees it.
    status, body = raw_get(leaking_demo, "/debug/leakguard/ui?<script>alert(1)</script>", hostile)
    assert status == 400
    assert b"<script>" not in body


def test_history_of_the_running_demo(leaking_demo: Demo) -> None:
    report = leaking_demo.report()
    status, _, body = http("GET", f"{leaking_demo.base_url}/debug/leakguard/history")
    assert status == 200
    history = json.loads(body)
    fine = history["fine"]["points"]
    coarse = history["coarse"]["points"]
    assert 10 <= len(fine) <= 600 and 1 <= len(coarse) <= 1440
    assert all(a["t"] < b["t"] for a, b in zip(fine, fine[1:]))
    assert all(p["rss_min"] <= p["rss"] <= p["rss_max"] and p["heap"] > 0 for p in fine)
    assert history["limit"]["bytes"] == report["limit"]["bytes"]
    trend = history["trend"]
    assert trend["suspected"] and trend["slope_bytes_per_second"] > 0
    start, end = trend["line"]
    assert start["t"] < end["t"] and start["bytes"] < end["bytes"]
    assert trend["projection"][1]["bytes"] == report["limit"]["bytes"]
    assert trend["oom_at"] > history["generated_at"]

    status, _, body = http("GET", f"{leaking_demo.base_url}/debug/leakguard/history?tier=hourly")
    assert status == 400
    assert "bad tier" in json.loads(body)["error"]
