"""Images in and out of the A1111-compatible API: base64 / data URLs / (opt-in) http(s) URLs.

Everything here handles untrusted input from the network, so every failure is a ValueError with a
message fit to show the client (the caller prefixes the field name), and fetching a URL is guarded
against server-side request forgery: the host's addresses are resolved once, every one must be
public, and the connection goes to a checked address, never to the host name resolved again
(DNS rebinding). Redirects are never followed, since each would need the same checks.
"""

from __future__ import annotations

import base64
import binascii
import http.client
import io
import ipaddress
import re
import socket
import ssl
import time
from urllib.parse import quote, urlsplit

from PIL import Image
from PIL.PngImagePlugin import PngInfo

# The command-line flag that turns URL fetching on; named in the error when it is off.
ALLOW_URLS_FLAG = "--api-allow-image-urls"

_SCHEME_RE = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.\-]*):")  # base64 has no ':', so this is never data
_USER_AGENT = "Atelier-API (image fetch)"
_READ_CHUNK = 64 * 1024
_JPEG_WEBP_QUALITY = 90
_EXIF_USER_COMMENT = 0x9286  # in the Exif IFD (0x8769); A1111 keeps infotext of JPEG/WebP there
_EXIF_IFD = 0x8769

AddressInfo = tuple[socket.AddressFamily, tuple]


def decode_image(
    value: str,
    *,
    allow_urls: bool = False,
    max_pixels: int = 4096 * 4096,
    max_bytes: int = 50 * 2**20,
    timeout: float = 10.0,
) -> Image.Image:
    """The loaded image an API client sent as base64, a data URL or (when allowed) an http(s) URL."""
    if not isinstance(value, str):
        raise ValueError(f"expected a base64-encoded image string, got {type(value).__name__}")
    text = value.strip()
    if not text:
        raise ValueError("the image is empty")
    if text[:5].lower() == "data:":
        data = _decode_base64(_data_url_payload(text), max_bytes)
    elif text[:7].lower() == "http://" or text[:8].lower() == "https://":
        if not allow_urls:
            raise ValueError(
                "image URLs are not accepted: URL fetching is off; send the image as base64, or start "
                f"Atelier with {ALLOW_URLS_FLAG} to let the server fetch public http(s) URLs"
            )
        data = _fetch(text, max_bytes=max_bytes, timeout=timeout)
    elif match := _SCHEME_RE.match(text):
        raise ValueError(
            f"unsupported URL scheme {match.group(1)[:20]!r}: send base64 or a data: URL"
            f" (http/https only with {ALLOW_URLS_FLAG})"
        )
    else:
        data = _decode_base64(text, max_bytes)
    return _open_image(data, max_pixels)


def encode_image(image: Image.Image, *, infotext: str | None = None, fmt: str = "png") -> str:
    """Base64 (no data: prefix, as A1111 answers) of `image` as PNG, JPEG or WebP with its infotext.

    PNG carries the infotext in a `parameters` text chunk, JPEG/WebP in the EXIF UserComment; both
    are where A1111 (and engine.schema.infotext.read_png_parameters) look for it.
    """
    kind = fmt.lower().lstrip(".")
    buffer = io.BytesIO()
    if kind == "png":
        info = None
        if infotext is not None:
            info = PngInfo()
            info.add_text("parameters", infotext)  # falls back to iTXt (UTF-8) when not Latin-1
        _convert(image, keep={"1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16"}).save(
            buffer, format="PNG", pnginfo=info
        )
    elif kind in ("jpeg", "jpg", "webp"):
        keep = {"L", "RGB"} if kind != "webp" else {"RGB", "RGBA"}
        options: dict = {"quality": _JPEG_WEBP_QUALITY}
        exif = _user_comment_exif(infotext) if infotext is not None else None
        if exif is not None:
            options["exif"] = exif
        _convert(image, keep=keep, alpha=kind == "webp").save(
            buffer, format="WEBP" if kind == "webp" else "JPEG", **options
        )
    else:
        raise ValueError(f"unsupported image format {fmt[:20]!r}: use png, jpeg or webp")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


# --- decoding -------------------------------------------------------------------------------------


def _data_url_payload(text: str) -> str:
    """The base64 part of `data:<mime>[;params];base64,<payload>`."""
    header, comma, payload = text[5:].partition(",")
    if not comma:
        raise ValueError("malformed data URL: no ',' before the data")
    mime, *params = (part.strip().lower() for part in header.split(";"))
    if "base64" not in params:
        raise ValueError("data URLs must be base64-encoded ('data:image/png;base64,...')")
    # The media type is only advisory (Pillow sniffs the format), but a text/... one is a client bug.
    if mime and not (mime.startswith("image/") or mime == "application/octet-stream"):
        raise ValueError(f"the data URL's media type {mime[:40]!r} is not an image type")
    return payload


def _decode_base64(text: str, max_bytes: int) -> bytes:
    compact = "".join(text.split())  # clients wrap lines at 76 characters or pretty-print JSON
    compact = compact.rstrip("=")
    # Refuse before decoding: 4 base64 characters carry 3 bytes.
    if len(compact) * 3 // 4 > max_bytes:
        raise ValueError(f"the image is larger than the limit of {max_bytes} bytes")
    if len(compact) % 4 == 1:
        raise ValueError("invalid base64 image data (truncated)")
    # Missing padding is common (JavaScript clients strip it); URL-safe characters too.
    compact = compact.translate(_URLSAFE) + "=" * (-len(compact) % 4)
    try:
        data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):  # ValueError: non-ASCII characters
        raise ValueError("invalid base64 image data") from None
    if len(data) > max_bytes:
        raise ValueError(f"the image is larger than the limit of {max_bytes} bytes")
    return data


_URLSAFE = str.maketrans("-_", "+/")


def _open_image(data: bytes, max_pixels: int) -> Image.Image:
    if not data:
        raise ValueError("the image is empty")
    try:
        # Image.open only parses the header; Pillow's own bomb check (MAX_IMAGE_PIXELS, a
        # process-wide setting we leave alone) may already raise here for absurd sizes.
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise ValueError(f"the image has more than the limit of {max_pixels} pixels") from None
    except Exception:  # UnidentifiedImageError, and whatever a malformed header provokes
        raise ValueError("the data is not an image in a format Pillow can read") from None
    # The size is known from the header: refuse before load() allocates and decompresses.
    width, height = image.size
    if width <= 0 or height <= 0:
        raise ValueError("the image has no pixels")
    if width * height > max_pixels:
        raise ValueError(f"the image is {width}x{height}, more than the limit of {max_pixels} pixels")
    try:
        image.load()
    except Image.DecompressionBombError:
        raise ValueError(f"the image has more than the limit of {max_pixels} pixels") from None
    except Exception as exc:  # truncated or corrupt data: OSError, SyntaxError, struct.error, ...
        raise ValueError(f"the image data is truncated or corrupt ({_short(exc)})") from None
    if image.width * image.height > max_pixels:  # formats whose real size shows only on load
        raise ValueError(f"the image has more than the limit of {max_pixels} pixels")
    return image


# --- encoding -------------------------------------------------------------------------------------


def _convert(image: Image.Image, *, keep: set[str], alpha: bool = True) -> Image.Image:
    if image.mode in keep:
        return image
    has_alpha = "A" in image.mode or "transparency" in image.info
    return image.convert("RGBA" if alpha and has_alpha else "RGB")


def _user_comment_exif(infotext: str) -> bytes | None:
    exif = Image.Exif()
    # The encoding piexif (A1111) writes: an 8-byte charset marker, then UTF-16 big-endian.
    exif.get_ifd(_EXIF_IFD)[_EXIF_USER_COMMENT] = b"UNICODE\0" + infotext.encode("utf-16-be")
    data = exif.tobytes()
    # A JPEG APP1 segment holds at most 64 KiB; an enormous infotext is dropped rather than failing
    # the whole image.
    return data if len(data) < 65000 else None


# --- fetching URLs --------------------------------------------------------------------------------

# Beyond `not is_global`, which misses some of these (e.g. multicast is "global" to ipaddress).
_EXTRA_FORBIDDEN_NETWORKS = tuple(
    ipaddress.ip_network(net)
    for net in (
        "0.0.0.0/8",  # "this network"; 0.0.0.0 reaches the local host on Linux
        "100.64.0.0/10",  # carrier-grade NAT
        "169.254.0.0/16",  # link-local: cloud metadata services live at 169.254.169.254
        "192.0.0.0/24",
        "198.18.0.0/15",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "fec0::/10",  # deprecated site-local
        "ff00::/8",
        "64:ff9b:1::/48",  # local-use NAT64
    )
)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 form carries, which the OS or a translator may connect to."""
    if address.ipv4_mapped is not None:  # ::ffff:a.b.c.d
        return address.ipv4_mapped
    if address.sixtofour is not None:  # 2002:AABB:CCDD::/48
        return address.sixtofour
    value = int(address)
    high = value >> 32
    # IPv4-compatible ::a.b.c.d, IPv4-translated ::ffff:0:a.b.c.d, NAT64 64:ff9b::a.b.c.d
    if high in (0, 0xFFFF << 16, 0x64FF9B << 64) and value > 1:
        return ipaddress.IPv4Address(value & 0xFFFFFFFF)
    return None


def _is_forbidden_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True unless `address` is an ordinary public unicast address.

    Tests replace this function to reach a server on 127.0.0.1; production code calls it by its
    module-level name for that reason only.
    """
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None and _is_forbidden_address(embedded):
            return True
    return (
        not address.is_global
        or address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or any(address in net for net in _EXTRA_FORBIDDEN_NETWORKS if net.version == address.version)
    )


def _tls_context() -> ssl.SSLContext:
    """Certificate and host name verification on (tests swap in a context trusting their own CA)."""
    return ssl.create_default_context()


def _parse_url(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, request target) of an http(s) URL without credentials."""
    if any(ord(char) <= 0x20 or ord(char) == 0x7F for char in url):
        raise ValueError("the image URL contains spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError("the image URL is malformed (bad host or port)") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"unsupported URL scheme {scheme[:20]!r}: only http and https are fetched")
    if "@" in parts.netloc:
        raise ValueError("image URLs with a user name or password are not accepted")
    host = parts.hostname
    if not host:
        raise ValueError("the image URL has no host")
    if port == 0:
        raise ValueError("the image URL has an invalid port")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    # The fragment never goes to the server; non-ASCII is percent-encoded, existing escapes kept.
    target = quote(target, safe="/?:@!$&'()*+,;=%~[]")
    return scheme, host, port or (443 if scheme == "https" else 80), target


def _resolve_public(host: str, port: int) -> list[AddressInfo]:
    """Every address of `host`, all checked public, or ValueError: one bad address taints the host,
    since which one a client (or a later lookup) would use is out of our hands."""
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        if literal.version == 6:
            infos: list[AddressInfo] = [(socket.AF_INET6, (host, port, 0, 0))]
        else:
            infos = [(socket.AF_INET, (host, port))]
    else:
        try:
            resolved = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
        except (OSError, UnicodeError):  # socket.gaierror is an OSError
            raise ValueError(f"could not resolve the image URL's host {host[:100]!r}") from None
        infos = [
            (family, sockaddr)
            for family, _type, _proto, _name, sockaddr in resolved
            if family in (socket.AF_INET, socket.AF_INET6)
        ]
    if not infos:
        raise ValueError(f"could not resolve the image URL's host {host[:100]!r}")
    for _family, sockaddr in infos:
        try:
            address = ipaddress.ip_address(sockaddr[0])
        except ValueError:
            forbidden = True  # an address we cannot even parse is not one we can vouch for
        else:
            forbidden = _is_forbidden_address(address)
        if forbidden:
            raise ValueError(
                f"refusing to fetch from {host[:100]!r}: it is or resolves to a loopback, private, "
                "link-local or otherwise non-public address"
            )
    return infos


class _PinnedConnection(http.client.HTTPConnection):
    """HTTP(S) to already-checked addresses; `host` is used only for the Host header and TLS.

    http.client would resolve `host` again on connect, and a second DNS answer could point
    anywhere, so connect() is replaced by one that dials the checked addresses.
    """

    def __init__(
        self, host: str, port: int, addresses: list[AddressInfo], timeout: float, tls: ssl.SSLContext | None
    ):
        super().__init__(host, port, timeout=timeout)
        self._addresses = addresses
        self._tls = tls
        if tls is not None:
            self.default_port = 443  # so the Host header omits ":443", as for a normal HTTPS client

    def connect(self) -> None:
        error: OSError | None = None
        for family, sockaddr in self._addresses:
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.settimeout(self.timeout)
                sock.connect(sockaddr)
            except OSError as exc:
                sock.close()
                error = exc
                continue
            break
        else:
            raise error or OSError("no address to connect to")
        if self._tls is not None:
            try:
                # SNI and certificate verification use the URL's host name, not the IP we dialled.
                sock = self._tls.wrap_socket(sock, server_hostname=self.host)
            except BaseException:
                sock.close()
                raise
        self.sock = sock


def _fetch(url: str, *, max_bytes: int, timeout: float) -> bytes:
    scheme, host, port, target = _parse_url(url)
    addresses = _resolve_public(host, port)
    connection = _PinnedConnection(
        host, port, addresses, timeout, _tls_context() if scheme == "https" else None
    )
    # Each socket operation has `timeout`; the deadline also bounds a server trickling bytes slowly.
    deadline = time.monotonic() + timeout
    where = f"{host[:100]!r}"
    try:
        connection.request(
            "GET",
            target,
            headers={"User-Agent": _USER_AGENT, "Accept": "image/*", "Accept-Encoding": "identity"},
        )
        response = connection.getresponse()
        if 300 <= response.status < 400:
            raise ValueError(
                f"the server at {where} answered HTTP {response.status} (a redirect); redirects are not "
                "followed, give the final URL of the image"
            )
        if response.status != 200:
            raise ValueError(f"the server at {where} answered HTTP {response.status}, not 200")
        # http.client has parsed Content-Length (None when absent or chunked); refuse early.
        if response.length is not None and response.length > max_bytes:
            raise ValueError(f"the image is larger than the limit of {max_bytes} bytes")
        chunks: list[bytes] = []
        received = 0
        while chunk := response.read1(_READ_CHUNK):  # read1: returns as soon as any data arrived
            received += len(chunk)
            if received > max_bytes:
                raise ValueError(f"the image is larger than the limit of {max_bytes} bytes")
            if time.monotonic() > deadline:
                raise TimeoutError
            chunks.append(chunk)
    except TimeoutError:
        raise ValueError(f"fetching the image from {where} timed out after {timeout:g} s") from None
    except ssl.SSLCertVerificationError as exc:
        raise ValueError(
            f"fetching the image from {where} failed: TLS certificate not valid ({exc.verify_message})"
        ) from None
    except (OSError, http.client.HTTPException) as exc:
        raise ValueError(f"fetching the image from {where} failed ({_short(exc)})") from None
    finally:
        connection.close()
    return b"".join(chunks)


def _short(exc: BaseException) -> str:
    """A one-line reason for an error message: never a traceback, never an essay."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    name = type(exc).__name__
    return f"{name}: {text[:200]}" if text else name
