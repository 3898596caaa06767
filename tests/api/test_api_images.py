"""api.images: decoding what API clients send (base64, data URLs, opt-in URLs) and encoding answers.

URL tests never touch the network: host names resolve through a fake getaddrinfo, and the only
server reached is one this file starts on 127.0.0.1, allowed by patching the address check.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import random
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from api import images
from api.images import ALLOW_URLS_FLAG, decode_image, encode_image

INFOTEXT = "a cat, ねこ\nNegative prompt: dog\nSteps: 20, Sampler: Euler a, Seed: 1, Size: 24x16"


def sample(mode: str = "RGB") -> Image.Image:
    image = Image.new(mode, (24, 16))
    image.putpixel((3, 5), (200, 10, 30, 255)[: len(mode)])
    return image


def png_bytes(image: Image.Image | None = None) -> bytes:
    return base64.b64decode(encode_image(image or sample()))


def noise_png() -> bytes:
    """A PNG that does not compress away, so cutting it short really truncates the pixel data."""
    pixels = random.Random(0).randbytes(64 * 64 * 3)
    return png_bytes(Image.frombytes("RGB", (64, 64), pixels))


def user_comment(image: Image.Image) -> str:
    raw = image.getexif().get_ifd(0x8769)[0x9286]
    assert raw.startswith(b"UNICODE\0")
    return raw[8:].decode("utf-16-be")


# --- base64 and data URLs --------------------------------------------------------------------------


def test_base64_round_trip_keeps_pixels_and_infotext():
    original = sample()
    decoded = decode_image(encode_image(original, infotext=INFOTEXT))
    assert decoded.format == "PNG"
    assert decoded.size == (24, 16)
    assert decoded.convert("RGB").tobytes() == original.tobytes()
    assert decoded.info["parameters"] == INFOTEXT


def test_png_without_infotext_has_no_parameters():
    assert "parameters" not in decode_image(encode_image(sample())).info


@pytest.mark.parametrize("mime", ["image/png", "IMAGE/JPEG", "image/webp", "application/octet-stream"])
def test_data_url_round_trip(mime):
    value = f"data:{mime};base64," + encode_image(sample(), infotext=INFOTEXT)
    decoded = decode_image(value)
    assert decoded.info["parameters"] == INFOTEXT  # the media type is advisory; Pillow sniffs PNG


def test_whitespace_missing_padding_and_urlsafe_alphabet_are_tolerated():
    data = png_bytes()
    data += b"\0" * (1 if len(data) % 3 == 0 else 0)  # Pillow ignores bytes after IEND
    encoded = base64.b64encode(data).decode()
    assert encoded.endswith("=")
    wrapped = "\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76))
    assert decode_image("  " + wrapped.rstrip("=") + "\r\n").size == (24, 16)
    urlsafe = base64.urlsafe_b64encode(data).decode()
    assert decode_image(urlsafe).size == (24, 16)


@pytest.mark.parametrize("fmt", ["jpeg", "JPG", "webp"])
def test_jpeg_and_webp_carry_the_infotext_in_exif(fmt):
    decoded = decode_image(encode_image(sample("RGBA"), infotext=INFOTEXT, fmt=fmt))
    assert decoded.format == ("WEBP" if fmt == "webp" else "JPEG")
    assert "parameters" not in decoded.info
    assert user_comment(decoded) == INFOTEXT


def test_unknown_output_format_is_refused():
    with pytest.raises(ValueError, match="unsupported image format"):
        encode_image(sample(), fmt="bmp")


# --- bad input -------------------------------------------------------------------------------------


def png_header_claiming(width: int, height: int) -> str:
    """A PNG whose header claims width x height, with no pixel data: a decompression bomb's shape."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    data = (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    )
    return base64.b64encode(data).decode()


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("", "empty"),
        ("   \n ", "empty"),
        ("not base64 at all!!", "base64"),
        ("QUJD=QUJD", "base64"),  # padding in the middle
        ("QUJDR", "truncated"),
        ("dGjDqQ==é", "base64"),  # non-ASCII
        (base64.b64encode(b"hello, this is text").decode(), "not an image"),
        (base64.b64encode(noise_png()[:6000]).decode(), "truncated or corrupt"),
        ("data:image/png,iVBORw0KGgo", "base64-encoded"),
        ("data:image/png;base64", "malformed data URL"),
        ("data:text/plain;base64,aGVsbG8=", "not an image type"),
        ("data:image/png;base64,", "empty"),
        (png_header_claiming(5000, 5000), "5000x5000"),  # 25 Mpx: over our 16.7 Mpx default
        (png_header_claiming(100000, 100000), "pixels"),  # so big that Pillow's own check fires
    ],
)
def test_bad_input_is_a_clear_value_error(value, match):
    with pytest.raises(ValueError, match=match):
        decode_image(value)


def test_non_string_input_is_refused():
    with pytest.raises(ValueError, match="base64-encoded image string"):
        decode_image(b"iVBOR")  # type: ignore[arg-type]


def test_pixel_and_byte_limits():
    value = encode_image(Image.new("RGB", (100, 100)))
    with pytest.raises(ValueError, match="limit of 5000 pixels"):
        decode_image(value, max_pixels=5000)
    assert decode_image(value, max_pixels=100 * 100).size == (100, 100)
    size = len(base64.b64decode(value))
    with pytest.raises(ValueError, match=f"limit of {size - 1} bytes"):
        decode_image(value, max_bytes=size - 1)
    with pytest.raises(ValueError, match="limit of 100 bytes"):  # refused before decoding
        decode_image("data:image/png;base64," + value, max_bytes=100)
    assert decode_image(value, max_bytes=size).size == (100, 100)


# --- URLs: refused unless enabled, and then only to public addresses --------------------------------


@pytest.fixture
def no_network(monkeypatch):
    """Fake DNS for *.example names, and a record of every connect attempt (there must be none)."""
    table = {
        "localhost": ["127.0.0.1", "::1"],
        "internal.example": ["10.0.0.5"],
        "metadata.example": ["169.254.169.254"],
        "mixed.example": ["93.184.216.34", "192.168.1.20"],
        "mixed6.example": ["2606:2800:220:1::1", "fd12::1"],
        "mapped.example": ["::ffff:10.0.0.1"],
    }
    lookups: list[str] = []
    connects: list[object] = []
    real_getaddrinfo = socket.getaddrinfo

    def fake_getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
        lookups.append(host)
        if host in table:
            return [
                (
                    socket.AF_INET6 if ":" in a else socket.AF_INET,
                    socket.SOCK_STREAM,
                    6,
                    "",
                    (a, port, 0, 0) if ":" in a else (a, port),
                )
                for a in table[host]
            ]
        # Numeric forms only (e.g. "2130706433", "127.1"): a real DNS lookup must never happen.
        return real_getaddrinfo(host, port, family, type, proto, flags | socket.AI_NUMERICHOST)

    def no_connect(self, address):
        connects.append(address)
        raise AssertionError(f"connected to {address}")

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", no_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", no_connect)
    return {"lookups": lookups, "connects": connects}


@pytest.mark.parametrize("url", ["http://example.com/cat.png", "HTTPS://example.com/cat.png"])
def test_urls_are_refused_when_off_naming_the_flag(url, no_network):
    with pytest.raises(ValueError, match=ALLOW_URLS_FLAG):
        decode_image(url)
    assert no_network["lookups"] == [] and no_network["connects"] == []


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("ftp://example.com/cat.png", "scheme 'ftp'"),
        ("file:///etc/passwd", "scheme 'file'"),
        ("gopher://example.com/", "scheme 'gopher'"),
        ("http://user:pass@example.com/cat.png", "user name or password"),
        ("http://user@example.com/cat.png", "user name or password"),
        ("http://example.com:99999/cat.png", "malformed"),
        ("http://example.com:0/cat.png", "invalid port"),
        ("http:///cat.png", "no host"),
        ("http://[::1/cat.png", "malformed"),
        ("http://example.com/a cat.png", "spaces or control"),
        ("http://example.com/\r\nX-Injected: 1", "spaces or control"),
    ],
)
def test_malformed_or_unsupported_urls_are_refused(url, match, no_network):
    with pytest.raises(ValueError, match=match):
        decode_image(url, allow_urls=True)
    assert no_network["connects"] == []


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/cat.png",
        "http://127.9.9.9/cat.png",
        "http://localhost/cat.png",
        "http://LOCALHOST:8080/cat.png",
        "http://10.1.2.3/cat.png",
        "http://172.16.0.1/cat.png",
        "http://192.168.0.10/cat.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://100.64.0.1/cat.png",
        "http://0.0.0.0/cat.png",
        "http://224.0.0.1/cat.png",
        "http://255.255.255.255/cat.png",
        "http://[::1]/cat.png",
        "http://[::]/cat.png",
        "http://[::ffff:127.0.0.1]/cat.png",
        "http://[::ffff:169.254.169.254]/cat.png",
        "http://[::127.0.0.1]/cat.png",  # IPv4-compatible
        "http://[64:ff9b::a9fe:a9fe]/cat.png",  # NAT64 of 169.254.169.254
        "http://[2002:7f00:1::1]/cat.png",  # 6to4 of 127.0.0.1
        "http://[fe80::1]/cat.png",
        "http://[fd00::1]/cat.png",
        "http://[ff02::1]/cat.png",
        "http://2130706433/cat.png",  # 127.0.0.1 as one number
        "http://127.1/cat.png",
        "http://0x7f000001/cat.png",
        "http://internal.example/cat.png",
        "http://metadata.example/latest/meta-data/",
        "http://mixed.example/cat.png",  # one public and one private address
        "http://mixed6.example/cat.png",
        "http://mapped.example/cat.png",
        "https://localhost/cat.png",
    ],
)
def test_non_public_hosts_are_refused_before_connecting(url, no_network):
    with pytest.raises(ValueError, match="non-public address"):
        decode_image(url, allow_urls=True)
    assert no_network["connects"] == []


def test_unresolvable_host_is_a_clear_error(no_network):
    with pytest.raises(ValueError, match="could not resolve"):
        decode_image("http://no-such-host.invalid/cat.png", allow_urls=True)
    assert no_network["connects"] == []


@pytest.mark.parametrize(
    ("address", "forbidden"),
    [
        ("93.184.216.34", False),
        ("8.8.8.8", False),
        ("2606:4700:4700::1111", False),
        ("127.0.0.1", True),
        ("10.0.0.1", True),
        ("172.31.255.255", True),
        ("192.168.1.1", True),
        ("169.254.169.254", True),
        ("100.127.0.1", True),
        ("0.0.0.0", True),
        ("0.1.2.3", True),
        ("239.255.255.250", True),
        ("233.252.0.1", True),  # multicast that ipaddress calls "global"
        ("::1", True),
        ("::", True),
        ("fc00::1", True),
        ("fe80::1%1", True),
        ("fec0::1", True),
        ("::ffff:192.168.0.1", True),
        ("::ffff:0:10.0.0.1", True),
        ("64:ff9b::7f00:1", True),
        ("2002:c0a8:101::", True),
    ],
)
def test_the_production_address_check(address, forbidden):
    assert images._is_forbidden_address(ipaddress.ip_address(address)) is forbidden


# --- URLs against a real local server -------------------------------------------------------------

PNG_WITH_INFOTEXT = base64.b64decode(encode_image(sample(), infotext=INFOTEXT))


class Handler(BaseHTTPRequestHandler):
    seen: list[tuple[str, str | None]] = []  # (path, Host header) of every request

    def do_GET(self):  # noqa: N802 (http.server's naming)
        type(self).seen.append((self.path, self.headers.get("Host")))
        if self.path == "/cat.png":
            self._answer(200, PNG_WITH_INFOTEXT)
        elif self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/cat.png")
            self.end_headers()
        elif self.path == "/stream":  # no Content-Length: the body ends when the connection does
            self.send_response(200)
            self.end_headers()
            self.wfile.write(PNG_WITH_INFOTEXT)
        elif self.path == "/slow":
            self.send_response(200)
            self.end_headers()
            with contextlib.suppress(OSError):
                for byte in PNG_WITH_INFOTEXT[:40]:  # a trickle: one byte every 0.1 s
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.1)
        else:
            self._answer(404, b"not found")

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # keep test output quiet
        pass


@contextlib.contextmanager
def serve(tls: ssl.SSLContext | None = None):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    Handler.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def allow_loopback(monkeypatch):
    """Lets exactly 127.0.0.1 through the address check; everything else stays as strict."""
    strict = images._is_forbidden_address
    loopback = ipaddress.ip_address("127.0.0.1")
    monkeypatch.setattr(images, "_is_forbidden_address", lambda a: a != loopback and strict(a))


@pytest.fixture
def pinned_dns(monkeypatch):
    """*.example names resolve to 127.0.0.1 on the first lookup only; a second lookup (what a
    rebinding attack exploits) would get 10.0.0.1 and fail the test through the server."""
    lookups: list[str] = []

    def fake_getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
        assert host.endswith(".example"), host
        lookups.append(host)
        address = "127.0.0.1" if len(lookups) == 1 else "10.0.0.1"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    return lookups


def test_a_200_image_response_is_accepted(allow_loopback):
    with serve() as port:
        decoded = decode_image(f"http://127.0.0.1:{port}/cat.png", allow_urls=True)
        streamed = decode_image(f"http://127.0.0.1:{port}/stream", allow_urls=True)
    assert decoded.info["parameters"] == INFOTEXT
    assert streamed.info["parameters"] == INFOTEXT


def test_the_checked_address_is_dialled_with_the_original_host_header(allow_loopback, pinned_dns):
    with serve() as port:
        decoded = decode_image(f"http://images.example:{port}/cat.png#frag", allow_urls=True)
    assert decoded.size == (24, 16)
    assert pinned_dns == ["images.example"]  # resolved once, never again on connect
    assert Handler.seen == [("/cat.png", f"images.example:{port}")]


def test_redirects_are_refused_not_followed(allow_loopback):
    with serve() as port:
        with pytest.raises(ValueError, match="HTTP 302"):
            decode_image(f"http://127.0.0.1:{port}/redirect", allow_urls=True)
    assert [path for path, _host in Handler.seen] == ["/redirect"]


def test_non_200_is_refused(allow_loopback):
    with serve() as port:
        with pytest.raises(ValueError, match="HTTP 404"):
            decode_image(f"http://127.0.0.1:{port}/missing.png", allow_urls=True)


@pytest.mark.parametrize("path", ["/cat.png", "/stream"])
def test_byte_limit_applies_to_fetched_bodies(allow_loopback, path):
    with serve() as port:
        with pytest.raises(ValueError, match="limit of 100 bytes"):
            decode_image(f"http://127.0.0.1:{port}{path}", allow_urls=True, max_bytes=100)


def test_a_trickling_server_hits_the_overall_timeout(allow_loopback):
    with serve() as port:
        started = time.monotonic()
        with pytest.raises(ValueError, match="timed out"):
            decode_image(f"http://127.0.0.1:{port}/slow", allow_urls=True, timeout=0.5)
    assert time.monotonic() - started < 3


def test_a_closed_port_is_a_clear_error(allow_loopback):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ValueError, match="failed"):
        decode_image(f"http://127.0.0.1:{port}/cat.png", allow_urls=True)


# --- HTTPS: SNI and certificate checks use the host name although the IP is dialled ---------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=images.example", "-addext", "subjectAltName=DNS:images.example",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def https_server(certificate, allow_loopback, pinned_dns, monkeypatch):
    cert, key = certificate
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    sni: list[str | None] = []
    server_context.sni_callback = lambda _sock, name, _ctx: sni.append(name)

    def trusting_context() -> ssl.SSLContext:  # the production context, trusting our test CA
        context = ssl.create_default_context()
        context.load_verify_locations(cert)
        return context

    monkeypatch.setattr(images, "_tls_context", trusting_context)
    with serve(server_context) as port:
        yield port, sni


def test_https_to_the_checked_ip_verifies_the_host_name(https_server):
    port, sni = https_server
    decoded = decode_image(f"https://images.example:{port}/cat.png", allow_urls=True)
    assert decoded.info["parameters"] == INFOTEXT
    assert sni == ["images.example"]
    assert Handler.seen == [("/cat.png", f"images.example:{port}")]


def test_https_with_a_certificate_for_another_name_is_refused(https_server):
    port, _sni = https_server
    with pytest.raises(ValueError, match="certificate"):
        decode_image(f"https://other.example:{port}/cat.png", allow_urls=True)
    assert Handler.seen == []
