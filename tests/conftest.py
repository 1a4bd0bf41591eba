"""Fixtures every test layer shares."""

from __future__ import annotations

import os
import ssl

import pytest

# Two cores here: keep torch from oversubscribing when pytest and helpers share the machine.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """An untrained FashionNet with the synthetic vocabularies at 64 px: fast to build, load and run."""
    import torch

    from shared.data.synth import ATTRIBUTES, CATEGORIES
    from shared.fashionnet import default_metadata, save_checkpoint
    from shared.fashionnet.checkpoint import build_model
    from shared.vocabulary import Attribute, Category, ClothesType

    torch.manual_seed(0)
    meta = default_metadata("fashionnet_efficientnet_lite0",
                            [Category(c.name, ClothesType(c.clothes_type)) for c in CATEGORIES],
                            [Attribute(name, group) for name, group in ATTRIBUTES],
                            version="tiny-1", embedding_dim=32, input_size=64)
    model = build_model(meta, pretrained=True).eval()
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pt", model, meta)


@pytest.fixture(scope="session")
def perturbed_checkpoint(tiny_checkpoint, tmp_path_factory):
    """A factory: `make(version, seed=1)` saves the tiny checkpoint's weights under another version, with the
    embedding head nudged (seeded) so its vectors differ, and returns the file."""
    import dataclasses

    import torch

    from shared.fashionnet import save_checkpoint
    from shared.fashionnet.checkpoint import load_checkpoint

    def make(version: str, seed: int = 1):
        model, meta = load_checkpoint(tiny_checkpoint)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            weight = model.embedding_head.weight
            weight.add_(0.05 * torch.randn(weight.shape, generator=generator))
        return save_checkpoint(tmp_path_factory.mktemp("perturbed") / "model.pt", model,
                               dataclasses.replace(meta, version=version, parent_version=meta.version))

    return make


class ImageServer:
    """A real HTTP server on 127.0.0.1 for image-URL tests (`image_server` fixture).

    GET /img/NAME serves `images[NAME]`; /drip/NAME sends its headers, then one body byte every `drip_s` seconds
    (a host that never quite times out); /redirect?to=URL answers 302 to URL; anything else is 404.
    """

    def __init__(self, drip_s: float = 3.0, tls: ssl.SSLContext | None = None) -> None:
        import http.server
        import threading
        import urllib.parse

        self.images: dict[str, bytes] = {}
        self.drip_s = drip_s
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                server.requests.append(self.path)
                url = urllib.parse.urlsplit(self.path)
                kind, _, name = url.path.lstrip("/").partition("/")
                if kind == "redirect":
                    self.send_response(302)
                    self.send_header("Location", urllib.parse.parse_qs(url.query)["to"][0])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif kind in ("img", "drip") and name in server.images:
                    body = server.images[name]
                    self.send_response(200)
                    self.send_header("Content-Type", "image/png")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    if kind == "img":
                        self.wfile.write(body)
                        return
                    for byte in body:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        if server.stopped.wait(server.drip_s):
                            return
                else:
                    self.send_error(404)

        self.stopped = threading.Event()
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.scheme = "https" if tls is not None else "http"
        self.port = self.httpd.server_address[1]
        self.host = f"127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"{self.scheme}://{self.host}/{path.lstrip('/')}"

    def close(self) -> None:
        self.stopped.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def make_image_server():
    """`make(tls=None)` -> a started ImageServer, closed after the test."""
    servers: list[ImageServer] = []

    def make(tls: ssl.SSLContext | None = None) -> ImageServer:
        servers.append(ImageServer(tls=tls))
        return servers[-1]

    try:
        yield make
    finally:
        for server in servers:
            server.close()


@pytest.fixture()
def image_server(make_image_server):
    return make_image_server()
