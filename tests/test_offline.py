"""The app runs offline: every page loads with the network cut, and nothing tries to reach another host.

Outside connections are cut at Python's socket layer: a ``sitecustomize`` module (for the `streamlit run` server)
or a monkeypatch (for AppTest) makes ``connect``, ``sendto`` and name lookups of any host other than this machine
fail, and writes down what was attempted. In the browser, every request to a host other than the app's server is
aborted and recorded. The server runs with the project's own `.streamlit/config.toml` (no settings on its command
line), so the test also holds that file to its promises: no usage statistics, no public-IP lookup at start-up.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import re
import socket
import subprocess
import sys
import textwrap
import tomllib
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from helpers import served_app

ROOT = Path(__file__).resolve().parent.parent
# URL paths: home, then app.py's pages
PAGES = ("", "Upload_images", "Live_webcam", "Video_files", "Evaluation", "Training_runs")
WAIT_MS = 120_000  # the test machine is slow and may be busy

# Installed as sitecustomize.py in the server's PYTHONPATH: every Python process started with it has no network.
GUARD = textwrap.dedent('''
    import errno, ipaddress, os, socket

    _LOG = os.environ["FER_OFFLINE_LOG"]


    def _address(host):
        """The IP address that ``host`` spells, or None for a name."""
        host = host.decode() if isinstance(host, bytes) else str(host)
        if host in ("", "localhost", "localhost.localdomain"):
            return ipaddress.ip_address("127.0.0.1")
        try:
            return ipaddress.ip_address(host.split("%")[0])
        except ValueError:
            return None


    def _is_local(host):
        address = _address(host)
        return address is not None and (address.is_loopback or address.is_unspecified)


    def _refuse(what):
        with open(_LOG, "a") as log:
            log.write(what + "\\n")
        raise OSError(errno.ENETUNREACH, "network cut by the offline test: " + what)


    def _guard(method):
        def guarded(self, address, *args):
            if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(address[0]):
                _refuse(f"{method.__name__} {address[0]}:{address[1]}")
            return method(self, address, *args)
        return guarded


    def _guarded_sendto(self, data, *args):
        address = args[-1]
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(address[0]):
            _refuse(f"sendto {address[0]}:{address[1]}")
        return _sendto(self, data, *args)


    _getaddrinfo, _sendto = socket.getaddrinfo, socket.socket.sendto


    def _guarded_getaddrinfo(host, *args, **kwargs):
        if host is not None and _address(host) is None:  # a name other than localhost: a DNS query
            _refuse(f"getaddrinfo {host}")
        return _getaddrinfo(host, *args, **kwargs)


    socket.socket.connect = _guard(socket.socket.connect)
    socket.socket.connect_ex = _guard(socket.socket.connect_ex)
    socket.socket.sendto = _guarded_sendto
    socket.getaddrinfo = _guarded_getaddrinfo
''')


@pytest.fixture
def network_cut(tmp_path):
    """Environment for a subprocess with the network cut: (env, log file of attempted outside connections).

    ``XDG_CACHE_HOME`` points into tmp_path, so anything a library keeps in the user's cache shows up there."""
    guard_dir = tmp_path / "guard"
    guard_dir.mkdir()
    (guard_dir / "sitecustomize.py").write_text(GUARD)
    log = tmp_path / "outside_connections.log"
    log.touch()
    # The project's config file decides Streamlit's settings; a proxy on this machine would relay outside requests.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("STREAMLIT_") and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    env.pop("ORT_DISABLE_TELEMETRY", None)  # the app must turn it off itself
    env.update(PYTHONPATH=os.pathsep.join([str(guard_dir), str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               FER_OFFLINE_LOG=str(log), XDG_CACHE_HOME=str(tmp_path / "cache"))
    return env, log


def test_the_guard_cuts_outside_connections_and_keeps_loopback(network_cut):
    env, log = network_cut
    probe = textwrap.dedent('''
        import socket, urllib.request
        server = socket.create_server(("127.0.0.1", 0))
        socket.create_connection(server.getsockname(), timeout=5).close()  # loopback still works
        for attempt in (lambda: socket.create_connection(("192.0.2.1", 80), timeout=5),
                        lambda: urllib.request.urlopen("http://example.com", timeout=5)):
            try:
                attempt()
            except OSError:
                pass
            else:
                raise SystemExit("an outside connection got through")
    ''')
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert log.read_text().split() == ["connect", "192.0.2.1:80", "getaddrinfo", "example.com"]


def test_streamlit_config_turns_usage_statistics_off():
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["browser"]["gatherUsageStats"] is False
    assert config["browser"]["serverAddress"] == "localhost"  # no public-IP lookup when the server is headless


def test_page_icons_are_local_files():
    """An emoji or ":material/...:" page icon is fetched by the browser from a CDN; the app's is a file it serves."""
    from fer_core.ui.navigation import PAGE_ICON

    assert Path(PAGE_ICON).is_file()
    for script in [ROOT / "app.py", *sorted((ROOT / "pages").glob("*.py"))]:
        source = script.read_text()
        assert "page_icon=PAGE_ICON" in source, f"{script.name}: set_page_config without the local page icon"


def test_onnx_runtime_is_imported_with_its_telemetry_off():
    """Importing onnxruntime directly would write its telemetry database: fer_core.onnx_runtime is the one door."""
    direct = [f"{path.relative_to(ROOT)}:{n}" for folder in ("fer_core", "training", "pages")
              for path in sorted((ROOT / folder).rglob("*.py")) if path.name != "onnx_runtime.py"
              for n, line in enumerate(path.read_text().splitlines(), 1)
              if re.match(r"\s*(import onnxruntime|from onnxruntime)", line)]
    assert direct == [], "import onnxruntime through fer_core.onnx_runtime.load_onnxruntime"


@pytest.fixture
def offline_app_url(network_cut):
    """`streamlit run app.py` with the network cut and only the project's config; yields (url, log, cache dir)."""
    env, log = network_cut
    with served_app(env, options=()) as url:
        yield url, log, Path(env["XDG_CACHE_HOME"])


@pytest.mark.timeout(900)
def test_every_page_loads_in_a_browser_with_the_network_cut(offline_app_url, launch_chromium):
    from playwright.sync_api import expect

    url, log, cache = offline_app_url
    app_host = urllib.parse.urlsplit(url).hostname
    outside: list[str] = []

    def only_the_app(route):
        host = urllib.parse.urlsplit(route.request.url).hostname
        if host in (app_host, "localhost") or route.request.url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort("internetdisconnected")

    expect.set_options(timeout=WAIT_MS)
    browser = launch_chromium()
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.route("**/*", only_the_app)
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    try:
        for path in PAGES:
            page.goto(f"{url}/{path}")
            expect(page.get_by_role("heading", level=1).first).to_be_visible()  # the page's title
            expect(page.get_by_test_id("stStatusWidget")).to_have_count(0)  # the script run has finished
            assert page.get_by_test_id("stException").count() == 0, f"/{path}: an exception on the page"
            if path == "Live_webcam":  # no public STUN server unless one is configured
                page.get_by_text("Connection", exact=True).click()
                expect(page.get_by_text(re.compile(r"ICE servers: none, direct connections only"))).to_be_visible()
            icons = page.locator("link[rel~='icon']")
            assert icons.count() >= 1, f"/{path}: no page icon"
            for i in range(icons.count()):
                href = icons.nth(i).evaluate("link => link.href")
                assert urllib.parse.urlsplit(href).hostname in (app_host, None), f"/{path}: page icon from {href}"
        page.wait_for_timeout(3000)  # time for anything sent after the pages settled (usage statistics)
    finally:
        context.close()
    assert outside == [], f"the browser tried to reach other hosts: {outside}"
    assert log.read_text() == "", f"the server tried to reach other hosts:\n{log.read_text()}"
    assert not (cache / "Microsoft").exists(), "ONNX Runtime wrote its telemetry database"


@pytest.mark.timeout(900)
def test_every_page_runs_in_apptest_with_the_network_cut(monkeypatch):
    """The same cut in this process (no browser needed): each page's script runs without an error. The live
    page is left to the browser test: streamlit-webrtc needs a real Streamlit runtime, which AppTest mocks."""
    from streamlit.testing.v1 import AppTest

    attempts: list[str] = []
    connect, getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def is_local(host) -> bool:
        try:
            return host == "localhost" or ipaddress.ip_address(str(host).split("%")[0]).is_loopback
        except ValueError:
            return False

    def guarded_connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not is_local(address[0]):
            attempts.append(f"connect {address}")
            raise OSError(errno.ENETUNREACH, "network cut by the offline test")
        return connect(self, address)

    def is_name(host) -> bool:
        """A host name other than localhost: looking it up would ask a DNS server."""
        try:
            ipaddress.ip_address(str(host).split("%")[0])
            return False
        except ValueError:
            return host not in ("", "localhost")

    def guarded_getaddrinfo(host, *args, **kwargs):
        if host is not None and is_name(host):
            attempts.append(f"getaddrinfo {host}")
            raise socket.gaierror(socket.EAI_NONAME, "network cut by the offline test")
        return getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
    pages = [f"pages/{p.name}" for p in sorted((ROOT / "pages").glob("*.py")) if "Live_webcam" not in p.name]
    for script in ["app.py", *pages]:
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
        if script != "app.py":
            at.switch_page(script)
        at.run()
        assert not at.exception, f"{script}: {[e.value for e in at.exception]}"
        assert at.title, f"{script}: no title drawn"
    assert attempts == []
