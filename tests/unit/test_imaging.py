"""Hostile and broken images get clear errors; good ones decode to RGB at a working size; the intake reads only
what its input policy allows, within one deadline, and says nothing about the server's files or network."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from shared.errors import InvalidInput, TooLarge, Unavailable
from shared.imaging import ImageIntake, ImageLimits, ImageSource, IntakePolicy, deadline_after
from shared.imaging.decode import decode_image
from shared.imaging.policy import Refused

CATALOGUE = "expected inline image bytes, or a file under the catalogue roots, or an http(s) URL on an allowed host"


def _png(size=(64, 48), mode="RGB", colour=128) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, colour).save(buf, format="PNG")
    return buf.getvalue()


def _jpeg(size=(64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, format="JPEG")
    return buf.getvalue()


def _resolver(table: dict[str, list[str]]):
    return lambda host, port: table.get(host, [])


# -- decoding ---------------------------------------------------------------------------------------------------


def test_good_image_decodes_to_rgb() -> None:
    decoded = decode_image(_png(mode="L"))
    assert decoded.image.mode == "RGB" and decoded.image.size == decoded.size == (64, 48)


@pytest.mark.parametrize(("payload", "error", "message"), [
    (b"", InvalidInput, "empty payload"),
    (b"hello, not an image", InvalidInput, "no decoder recognises"),
    (_png()[:60], InvalidInput, "complete, decodable image"),
    (_jpeg((2000, 1500))[:400], InvalidInput, "complete, decodable image"),  # truncated, and on the draft path
])
def test_broken_payloads(payload: bytes, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        decode_image(payload)


def test_decompression_bomb_rejected_from_header() -> None:
    # A 1x1-pixel-per-byte PNG of 10000x10000 compresses to a few KB but would decode to 300 MB.
    bomb = _png(size=(10000, 10000), mode="1")
    assert len(bomb) < 100_000
    with pytest.raises(TooLarge, match="expected at most 1000000 pixels"):
        decode_image(bomb, ImageLimits(max_pixels=1_000_000))


def test_oversize_bytes_and_tiny_images() -> None:
    with pytest.raises(TooLarge, match="expected at most 100 bytes"):
        decode_image(_png(), ImageLimits(max_bytes=100))
    with pytest.raises(InvalidInput, match="both sides >= 16"):
        decode_image(_png(size=(8, 8)))


@pytest.mark.parametrize(("payload", "mode"), [(_jpeg((3000, 1000)), "JPEG"), (_png((3000, 1000)), "PNG"),
                                               (_png((3000, 1000), mode="P", colour=3), "palette PNG")])
def test_large_pictures_are_decoded_to_the_working_size_and_keep_their_own_size(payload: bytes, mode: str) -> None:
    decoded = decode_image(payload, ImageLimits(max_side=300))
    assert decoded.size == (3000, 1000), mode  # what ingest stores as the image's width and height
    assert decoded.image.size == (300, 100) and decoded.image.mode == "RGB", mode
    assert decode_image(payload, ImageLimits(max_side=0)).image.size == (3000, 1000)  # 0: full size


# -- the policy, pure ---------------------------------------------------------------------------------------------


def test_files_are_read_only_under_the_roots_after_realpath(tmp_path: Path) -> None:
    root, outside = tmp_path / "catalog", tmp_path / "private"
    (root / "shirts").mkdir(parents=True)
    outside.mkdir()
    (root / "shirts" / "a.png").write_bytes(_png())
    (outside / "secret.png").write_bytes(_png())
    (root / "escape.png").symlink_to(outside / "secret.png")
    (root / "linked").symlink_to(outside)
    policy = IntakePolicy(roots=(root,))
    inside = root / "shirts" / "a.png"
    assert policy.file_path(str(inside)) == policy.file_path(inside.as_uri()) == inside.resolve()
    assert policy.file_path(f"file://localhost{inside}") == inside.resolve()
    for uri in (str(outside / "secret.png"), (outside / "secret.png").as_uri(),
                f"{root}/shirts/../../private/secret.png", str(root / "escape.png"),
                str(root / "linked" / "secret.png"), f"file://other-host{inside}",
                "/etc/passwd", f"{inside}\x00.png", "ftp://example.com/a.png"):
        with pytest.raises(Refused):
            policy.file_path(uri)
    with pytest.raises(Refused, match="reads no files"):
        policy.without_files().file_path(str(inside))
    assert policy.under_roots(root) and not policy.under_roots(tmp_path)


def test_relative_roots_are_relative_to_the_working_directory(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert IntakePolicy(roots=(Path("."),)).roots == (tmp_path.resolve(),)


def test_urls_only_to_allowed_hosts_and_public_addresses() -> None:
    table = {"img.example.com": ["93.184.216.34"], "cdn.shop.example": ["2606:2800:220:1::1"],
             "rebind.example.com": ["93.184.216.34", "127.0.0.1"], "internal.example": ["10.1.2.3"],
             "mapped.example.com": ["::ffff:127.0.0.1"], "meta.example.com": ["169.254.169.254"]}
    policy = IntakePolicy(url_hosts=("img.example.com", "*.shop.example", "rebind.example.com", "internal.example",
                                     "mapped.example.com", "meta.example.com:8080"), resolver=_resolver(table))
    target = policy.url_target("https://IMG.example.com/a/b.jpg?w=1")
    assert (target.host, target.port, target.path, target.address) == ("img.example.com", 443, "/a/b.jpg?w=1",
                                                                         "93.184.216.34")
    assert policy.url_target("http://cdn.shop.example/x.png").address == "2606:2800:220:1::1"
    refused = ["http://img.example.com:8080/a.jpg",  # only the scheme's default port without an explicit one
               "http://evil.example.org/a.jpg", "http://shop.example/a.jpg",  # *.shop.example is subdomains only
               "http://rebind.example.com/a.jpg",  # one private answer is enough to refuse
               "http://internal.example/a.jpg", "http://mapped.example.com/a.jpg",
               "http://meta.example.com:8080/latest", "http://user:pw@img.example.com/a.jpg",
               "ftp://img.example.com/a.jpg", "http://img.example.com:99999/a.jpg", "http:///a.jpg"]
    for url in refused:
        with pytest.raises(Refused):
            policy.url_target(url)
    private = IntakePolicy(url_hosts=("internal.example",), private_networks=("10.0.0.0/8",),
                           resolver=_resolver(table))
    assert private.url_target("http://internal.example/a.jpg").address == "10.1.2.3"
    loopback6 = IntakePolicy(url_hosts=("[::1]:8080",), private_networks=("::1/128",), resolver=lambda h, p: [h])
    assert loopback6.url_target("http://[::1]:8080/a").address == "::1"
    with pytest.raises(Refused, match="loopback"):
        IntakePolicy(url_hosts=("[::1]:8080",), resolver=lambda h, p: [h]).url_target("http://[::1]:8080/a")
    with pytest.raises(ValueError, match="expected an image URL host"):
        IntakePolicy(url_hosts=("http://img.example.com/path",))
    with pytest.raises(ValueError, match="expected a network"):
        IntakePolicy(private_networks=("ten-dot",))


def test_messages_say_what_is_expected_for_each_intake(tmp_path: Path) -> None:
    catalogue = IntakePolicy(roots=(tmp_path,), url_hosts=("img.example.com",))
    assert catalogue.expected() == CATALOGUE
    assert catalogue.without_files().expected() == "expected inline image bytes, or an http(s) URL on an allowed host"
    assert IntakePolicy().expected() == "expected inline image bytes"


# -- the intake -------------------------------------------------------------------------------------------------


def test_intake_loads_inline_bytes_and_files_under_its_roots(tmp_path) -> None:
    path = tmp_path / "a.png"
    data = _png(mode="L")
    path.write_bytes(data)
    intake = ImageIntake(policy=IntakePolicy(roots=(tmp_path,)))
    for source in (ImageSource(data=data), ImageSource(uri=str(path)), ImageSource(uri=path.as_uri())):
        loaded = intake.load(source, deadline=deadline_after(5.0))
        assert loaded.raw == data and loaded.image.mode == "RGB" and loaded.image.size == (64, 48)
    # The default intake and the public one read inline bytes only: never a file, not even under the roots.
    for refusing in (ImageIntake(), intake.for_public()):
        assert refusing.load(ImageSource(data=data)).size == (64, 48)
        with pytest.raises(InvalidInput, match="^a: expected inline image bytes$"):
            refusing.load(ImageSource(uri=str(path)), name="a")


def test_a_refused_file_reveals_nothing_about_the_server(tmp_path, monkeypatch) -> None:
    """Missing, unreadable, not a file, a FIFO, outside the roots: one message, and never a server path."""
    root = tmp_path / "catalog"
    root.mkdir()
    (root / "folder.png").mkdir()
    os.mkfifo(root / "fifo.png")
    (root / "locked.png").write_bytes(_png())
    (tmp_path / "outside.png").write_bytes(_png())
    intake = ImageIntake(policy=IntakePolicy(roots=(root,), url_hosts=("img.example.com",)))
    real_open = os.open

    def refuse_locked(path, *args, **kwargs):
        if str(path).endswith("locked.png"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse_locked)
    messages = set()
    for uri in ("missing.png", "folder.png", "fifo.png", "locked.png", "../outside.png"):
        with pytest.raises(InvalidInput) as info:
            intake.load(ImageSource(uri=str(root / uri)), name="image #0")
        messages.add(str(info.value))
    assert messages == {f"image #0: {CATALOGUE}"}


def test_intake_errors_name_the_image() -> None:
    intake = ImageIntake(ImageLimits(max_bytes=100))
    with pytest.raises(InvalidInput, match=r"^image #3: expected `data` \(bytes\) or `uri`, got neither"):
        intake.load(ImageSource(id="x"), name="image #3")
    with pytest.raises(TooLarge, match="^query image: expected at most 100 bytes"):
        intake.load(ImageSource(data=_png()), name="query image")
    with pytest.raises(InvalidInput, match="^inline data: expected image bytes"):
        intake.load(ImageSource(data=b""))
    with pytest.raises(ValueError, match="not both"):
        ImageSource(data=b"x", uri="a.png")


# -- URLs over real HTTP ------------------------------------------------------------------------------------------


def _url_intake(server, *, limits: ImageLimits | None = None, public: bool = False) -> ImageIntake:
    intake = ImageIntake(limits, IntakePolicy(url_hosts=(server.host,), private_networks=("127.0.0.1/32",)))
    return intake.for_public() if public else intake


def test_allowed_urls_are_fetched_and_every_redirect_is_checked_again(image_server) -> None:
    image_server.images["a.png"] = data = _png()
    intake = _url_intake(image_server)
    assert intake.load(ImageSource(uri=image_server.url("img/a.png"))).raw == data
    assert intake.load(ImageSource(uri=image_server.url(f"redirect?to={image_server.url('img/a.png')}"))).raw == data
    with pytest.raises(InvalidInput, match="^a: expected inline image bytes, or an http"):
        ImageIntake(policy=IntakePolicy(url_hosts=(image_server.host,))).load(  # loopback, not allow-listed
            ImageSource(uri=image_server.url("img/a.png")), name="a")


def test_refused_unreachable_and_closed_hosts_get_one_message(image_server) -> None:
    """A redirect to a host that is not allowed (here: loopback, another port), a closed port on an allowed host,
    a 404 and a host not on the list read alike, and nothing was fetched from the hosts that are not allowed."""
    closed = socket_port_closed()
    intake = ImageIntake(policy=IntakePolicy(url_hosts=(image_server.host, f"127.0.0.1:{closed}"),
                                             private_networks=("127.0.0.1/32",)))
    image_server.images["a.png"] = _png()
    other = f"http://127.0.0.2:{image_server.port}/img/a.png"
    messages = set()
    for url in (image_server.url(f"redirect?to={other}"), f"http://127.0.0.1:{closed}/a.png",
                image_server.url("img/nothing.png"), "http://169.254.169.254/latest/meta-data/", other):
        with pytest.raises(InvalidInput) as info:
            intake.load(ImageSource(uri=url), name="photo")
        messages.add(str(info.value))
    assert messages == {"photo: expected inline image bytes, or an http(s) URL on an allowed host"}
    assert image_server.requests == ["/redirect?to=" + other, "/img/nothing.png"]


def socket_port_closed() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens once it is closed


def test_a_dripping_host_is_cut_off_at_the_deadline(image_server) -> None:
    image_server.images["a.png"] = _png()
    image_server.drip_s = 0.2  # well under any per-read timeout
    intake = _url_intake(image_server, limits=ImageLimits(fetch_timeout_s=30))
    start = time.monotonic()
    with pytest.raises(InvalidInput, match="^photo: expected the image URL to deliver the image before the deadline"):
        intake.load(ImageSource(uri=image_server.url("drip/a.png")), deadline=deadline_after(1.0), name="photo")
    assert 0.9 < time.monotonic() - start < 1.5
    start = time.monotonic()  # without a caller deadline, the configured longest fetch
    with pytest.raises(InvalidInput, match="before the deadline"):
        _url_intake(image_server, limits=ImageLimits(fetch_timeout_s=0.5)).load(
            ImageSource(uri=image_server.url("drip/a.png")))
    assert time.monotonic() - start < 1.0


def test_a_past_deadline_fails_at_once(image_server) -> None:
    start = time.monotonic()
    with pytest.raises(InvalidInput, match="before the deadline"):
        _url_intake(image_server).load(ImageSource(uri=image_server.url("img/a.png")),
                                       deadline=time.monotonic() - 1)
    assert time.monotonic() - start < 0.5 and image_server.requests == []


def test_public_downloads_over_the_slots_are_refused_at_once(image_server) -> None:
    image_server.images["a.png"] = _png()
    image_server.drip_s = 0.1
    public = _url_intake(image_server, limits=ImageLimits(max_fetches=1), public=True)
    slow = threading.Thread(target=lambda: pytest.raises(InvalidInput, public.load,
                                                         ImageSource(uri=image_server.url("drip/a.png")),
                                                         deadline=deadline_after(1.5)))
    slow.start()
    try:
        time.sleep(0.3)
        start = time.monotonic()
        with pytest.raises(Unavailable, match="at most 1 image URL downloads at once"):
            public.load(ImageSource(uri=image_server.url("img/a.png")))
        assert time.monotonic() - start < 0.1
        assert public.load(ImageSource(data=_png())).size == (64, 48)  # inline bytes need no slot
    finally:
        slow.join()
    assert public.load(ImageSource(uri=image_server.url("img/a.png"))).size == (64, 48)  # the slot is free again


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_https_urls_are_verified_against_the_host_name(tmp_path, monkeypatch, make_image_server) -> None:
    import ssl

    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=images",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", "key.pem", "-out", "cert.pem"],
                   cwd=tmp_path, check=True, capture_output=True)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    server = make_image_server(tls=tls)
    server.images["a.png"] = data = _png()
    intake = _url_intake(server)
    with pytest.raises(InvalidInput, match="an http"):  # a certificate nobody vouches for
        intake.load(ImageSource(uri=server.url("img/a.png")))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "cert.pem"))  # the system trust store, for this test
    assert intake.load(ImageSource(uri=server.url("img/a.png"))).raw == data


def test_settings_build_one_catalogue_and_one_public_intake_per_process(tmp_path, monkeypatch) -> None:
    from pydantic import ValidationError

    from shared.config import ImageSettings

    monkeypatch.setenv("FASHION_IMAGE_ROOTS", f"{tmp_path}, {tmp_path}/b")
    monkeypatch.setenv("FASHION_IMAGE_URL_HOSTS", "img.example.com,*.cdn.example:8443")
    settings = ImageSettings()
    intake = settings.image_intake()
    assert intake is settings.image_intake() and settings.public_image_intake() is settings.public_image_intake()
    assert intake.policy.roots == (tmp_path.resolve(), tmp_path.resolve() / "b")
    assert intake.policy.url_hosts == ("img.example.com", "*.cdn.example:8443")
    assert settings.public_image_intake().policy.roots == () and not settings.public_image_intake().slots.wait
    assert settings.with_roots(tmp_path / "c").image_intake().policy.roots[-1] == tmp_path.resolve() / "c"
    monkeypatch.setenv("FASHION_IMAGE_URL_HOSTS", '["img.example.com"]')  # a JSON list works too
    assert ImageSettings().image_url_hosts == ["img.example.com"]
    monkeypatch.setenv("FASHION_IMAGE_URL_HOSTS", "https://img.example.com/")
    with pytest.raises(ValidationError, match="expected an image URL host as host, host:port or"):
        ImageSettings()
